//! What the client wants the stored images to be, beyond what the model makes: the file format
//! (`output_format`, with `output_compression` for lossy formats) and, for an edit, a mask that
//! says which parts of the first image may change. Ours, not the contract's: the OpenAI dialect
//! sends them, and `/nano-banana/images` accepts the same fields.

use serde_json::{Map, Value};

use super::{InvalidField, invalid, optional_str, whole_number};

/// A format we can encode images in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    Png,
    Jpeg,
    Webp,
}

impl OutputFormat {
    pub fn parse(s: &str) -> Option<OutputFormat> {
        match s {
            "png" => Some(OutputFormat::Png),
            "jpeg" | "jpg" => Some(OutputFormat::Jpeg),
            "webp" => Some(OutputFormat::Webp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Png => "png",
            OutputFormat::Jpeg => "jpeg",
            OutputFormat::Webp => "webp",
        }
    }

    pub fn mime_type(self) -> &'static str {
        match self {
            OutputFormat::Png => "image/png",
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Webp => "image/webp",
        }
    }

    /// The format of a MIME type, if it is one of ours.
    pub fn of_mime(mime: &str) -> Option<OutputFormat> {
        match mime {
            "image/png" => Some(OutputFormat::Png),
            "image/jpeg" | "image/jpg" => Some(OutputFormat::Jpeg),
            "image/webp" => Some(OutputFormat::Webp),
            _ => None,
        }
    }
}

/// How the stored images are encoded. `format: None` keeps what the model made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputOptions {
    pub format: Option<OutputFormat>,
    /// 0–100, for JPEG (its quality); ignored for PNG and WebP, which we encode losslessly.
    pub compression: Option<u8>,
}

impl OutputOptions {
    pub(super) fn parse(object: &Map<String, Value>) -> Result<OutputOptions, InvalidField> {
        let format = match optional_str(object, "output_format")? {
            None => None,
            Some(s) => Some(
                OutputFormat::parse(s)
                    .ok_or_else(|| invalid("output_format must be one of: png, jpeg, webp."))?,
            ),
        };
        let compression = match object.get("output_compression") {
            None | Some(Value::Null) => None,
            Some(value) => match whole_number(value) {
                Some(n @ 0..=100) => Some(n as u8),
                _ => {
                    return Err(invalid(
                        "output_compression must be an integer from 0 to 100.",
                    ));
                }
            },
        };
        Ok(OutputOptions {
            format,
            compression,
        })
    }
}
