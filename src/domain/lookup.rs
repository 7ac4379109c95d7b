//! `POST /nano-banana/tasks` bodies, validated: `retrieve` one task or `retrieve_batch` many.
//! Parsed from a `Value` like `ImagesRequest`, so each failure names its field; unknown fields
//! are ignored.

use serde_json::Value;

use super::{InvalidField, invalid};

/// The contract's cap on `ids` in one `retrieve_batch`.
pub const MAX_BATCH_IDS: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TasksRequest {
    /// `{"action": "retrieve", "id": …}` (`action` may be left out).
    Retrieve { id: String },
    /// `{"action": "retrieve_batch", "ids": [...]}`: at most 50 ids, possibly none.
    RetrieveBatch { ids: Vec<String> },
}

impl TasksRequest {
    pub fn parse(body: &Value) -> Result<TasksRequest, InvalidField> {
        let Some(object) = body.as_object() else {
            return Err(invalid("the request body must be a JSON object."));
        };
        match object.get("action") {
            None | Some(Value::Null) => {}
            Some(Value::String(action)) if action == "retrieve" => {}
            Some(Value::String(action)) if action == "retrieve_batch" => {
                let ids = match object.get("ids") {
                    Some(Value::Array(ids)) => ids,
                    None | Some(Value::Null) => {
                        return Err(invalid("ids is required for action retrieve_batch."));
                    }
                    Some(_) => return Err(invalid("ids must be an array of strings.")),
                };
                if ids.len() > MAX_BATCH_IDS {
                    return Err(invalid("ids has too many items: at most 50 are allowed."));
                }
                let ids = ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| {
                        id.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| invalid(format!("ids[{i}] must be a string.")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(TasksRequest::RetrieveBatch { ids });
            }
            Some(_) => return Err(invalid("action must be one of: retrieve, retrieve_batch.")),
        }
        match object.get("id") {
            Some(Value::String(id)) if !id.is_empty() => {
                Ok(TasksRequest::Retrieve { id: id.clone() })
            }
            None | Some(Value::Null) => Err(invalid("id is required.")),
            Some(_) => Err(invalid("id must be a non-empty string.")),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn error(body: Value) -> String {
        TasksRequest::parse(&body).unwrap_err().0
    }

    #[test]
    fn retrieve_is_the_default_action() {
        assert_eq!(
            TasksRequest::parse(&json!({"id": "t-1", "extra": 1})),
            Ok(TasksRequest::Retrieve { id: "t-1".into() })
        );
        assert_eq!(
            TasksRequest::parse(&json!({"action": "retrieve", "id": "t-1"})),
            Ok(TasksRequest::Retrieve { id: "t-1".into() })
        );
    }

    #[test]
    fn a_batch_takes_up_to_fifty_string_ids() {
        assert_eq!(
            TasksRequest::parse(&json!({"action": "retrieve_batch", "ids": []})),
            Ok(TasksRequest::RetrieveBatch { ids: vec![] })
        );
        let fifty: Vec<String> = (0..50).map(|i| i.to_string()).collect();
        assert!(TasksRequest::parse(&json!({"action": "retrieve_batch", "ids": fifty})).is_ok());
        let many: Vec<String> = (0..51).map(|i| i.to_string()).collect();
        assert_eq!(
            error(json!({"action": "retrieve_batch", "ids": many})),
            "ids has too many items: at most 50 are allowed."
        );
        assert_eq!(
            error(json!({"action": "retrieve_batch", "ids": ["a", 2]})),
            "ids[1] must be a string."
        );
        assert_eq!(
            error(json!({"action": "retrieve_batch"})),
            "ids is required for action retrieve_batch."
        );
        assert_eq!(
            error(json!({"action": "retrieve_batch", "ids": "a"})),
            "ids must be an array of strings."
        );
    }

    #[test]
    fn every_other_shape_names_its_field() {
        assert_eq!(error(json!([])), "the request body must be a JSON object.");
        assert_eq!(
            error(json!({"action": "delete", "id": "x"})),
            "action must be one of: retrieve, retrieve_batch."
        );
        assert_eq!(error(json!({})), "id is required.");
        assert_eq!(error(json!({"id": ""})), "id must be a non-empty string.");
        assert_eq!(error(json!({"id": 7})), "id must be a non-empty string.");
    }
}
