//! The task record of `POST /nano-banana/tasks`: what the server writes from a task row and what
//! the client reads back. Keys the contract leaves out of an unfinished task's record
//! (`finished_at`, `elapsed`, `response`) are absent, never `null`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::TaskState;

/// One task. Fields are in alphabetical order: the order in which records have always been
/// written (they were JSON maps, which sort their keys), so the bytes on the wire stay the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub api_id: String,
    pub application_id: String,
    /// Unix seconds, to the millisecond.
    pub created_at: f64,
    pub credential_id: String,
    /// Seconds from start (or creation, if it never started) to finish; finished tasks only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<f64>,
    pub id: String,
    /// The request body as the client sent it, except that a `data:` input is named
    /// `input:sha256:<hex>` (docs/contract.md).
    pub request: Value,
    /// Exactly what a sync request received: a success body or an error body. Finished tasks only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    pub state: TaskState,
    pub trace_id: String,
    /// Always `images`.
    #[serde(rename = "type")]
    pub kind: String,
    pub user_id: String,
}

/// The answer of `retrieve_batch`: the records found, in the order asked (unknown ids left out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskBatch {
    pub count: usize,
    pub items: Vec<TaskRecord>,
}

impl TaskBatch {
    pub fn new(items: Vec<TaskRecord>) -> TaskBatch {
        TaskBatch {
            count: items.len(),
            items,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(state: TaskState) -> TaskRecord {
        TaskRecord {
            api_id: "api".into(),
            application_id: "app".into(),
            created_at: 1757183036.787,
            credential_id: "cred".into(),
            elapsed: None,
            finished_at: None,
            id: "t".into(),
            request: json!({"prompt": "x"}),
            response: None,
            started_at: None,
            state,
            trace_id: "tr".into(),
            kind: "images".into(),
            user_id: "u".into(),
        }
    }

    #[test]
    fn an_unfinished_record_has_no_finish_keys_at_all() {
        let value = serde_json::to_value(record(TaskState::Pending)).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "api_id",
                "application_id",
                "created_at",
                "credential_id",
                "id",
                "request",
                "state",
                "trace_id",
                "type",
                "user_id"
            ]
        );
        assert!(!value.to_string().contains("null"));
    }

    #[test]
    fn a_finished_record_reads_back_as_written() {
        let mut finished = record(TaskState::Succeeded);
        finished.started_at = Some(1757183036.847);
        finished.finished_at = Some(1757183048.147);
        finished.elapsed = Some(11.3);
        finished.response = Some(json!({"success": true, "data": []}));
        let text = serde_json::to_string(&finished).unwrap();
        // The same bytes as the sorted JSON map records used to be built as.
        let as_map: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(text, as_map.to_string());
        assert_eq!(serde_json::from_str::<TaskRecord>(&text).unwrap(), finished);
    }
}
