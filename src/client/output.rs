//! Where downloaded images land: the `-o FILE|DIR` naming rules and the writes.
//! Not here: fetching the images (see `api`), printing the saved paths (see the commands).

use std::path::{Path, PathBuf};

use super::ClientError;
use super::input::ImageKind;

/// One image fetched from a `data[].image_url`.
#[derive(Debug, Clone)]
pub struct FetchedImage {
    pub url: String,
    pub bytes: bytes::Bytes,
    pub content_type: Option<String>,
}

/// What `-o` means once the file system has been asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Images are named `<task_id>-<n>.<ext>` inside it; the empty path is the current directory.
    Dir(PathBuf),
    /// One image is written to exactly this path; several get `-<n>` before the extension.
    File(PathBuf),
}

impl Target {
    /// A path is a directory when it already is one or when the user ended it with a separator
    /// (so `-o shots/` works before `shots` exists).
    pub fn from_output(output: Option<&Path>) -> Target {
        let Some(path) = output else {
            return Target::Dir(PathBuf::new());
        };
        let text = path.as_os_str().to_string_lossy();
        if path.is_dir() || text.ends_with('/') || text.ends_with(std::path::MAIN_SEPARATOR) {
            Target::Dir(path.to_path_buf())
        } else {
            Target::File(path.to_path_buf())
        }
    }

    /// The path for image `n` (1-based). `numbered` is true when more than one image was asked
    /// for or returned, so a script asking for two always gets `-1`/`-2` names even if only one
    /// image survived.
    pub fn path_for(&self, task_id: &str, n: usize, numbered: bool, ext: &str) -> PathBuf {
        match self {
            Target::Dir(dir) => dir.join(format!("{}-{n}.{ext}", file_safe(task_id))),
            Target::File(file) if !numbered => file.clone(),
            Target::File(file) => {
                let stem = file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let name = match file.extension() {
                    Some(e) => format!("{stem}-{n}.{}", e.to_string_lossy()),
                    None => format!("{stem}-{n}"),
                };
                file.with_file_name(name)
            }
        }
    }
}

/// The task id comes from the server; keep it from steering the write outside the target
/// directory (`../`, absolute paths) or producing hidden files.
fn file_safe(task_id: &str) -> String {
    let cleaned: String = task_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = cleaned.trim_start_matches('.');
    if trimmed.is_empty() {
        "image".to_string()
    } else {
        trimmed.to_string()
    }
}

/// The extension to save under: the URL's own extension first (the server chose it), then the
/// content type, then the bytes, then png, which is what every known server produces.
pub fn extension_for(image: &FetchedImage) -> &'static str {
    from_url(&image.url)
        .or_else(|| {
            image
                .content_type
                .as_deref()
                .and_then(ImageKind::from_content_type)
        })
        .or_else(|| ImageKind::sniff(&image.bytes))
        .unwrap_or(ImageKind::Png)
        .extension()
}

fn from_url(raw: &str) -> Option<ImageKind> {
    if let Some(rest) = raw.strip_prefix("data:") {
        return ImageKind::from_content_type(rest.split([';', ',']).next()?);
    }
    let url = url::Url::parse(raw).ok()?;
    let last = url.path_segments()?.next_back()?;
    let (_, ext) = last.rsplit_once('.')?;
    ImageKind::from_extension(ext)
}

/// Writes every image and returns the paths in `data[]` order. Existing files are replaced,
/// as `curl -o` does.
pub async fn save_all(
    target: &Target,
    task_id: &str,
    numbered: bool,
    images: &[FetchedImage],
) -> Result<Vec<PathBuf>, ClientError> {
    if let Target::Dir(dir) = target
        && !dir.as_os_str().is_empty()
    {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|source| ClientError::Save {
                path: dir.clone(),
                source,
            })?;
    }
    let numbered = numbered || images.len() > 1;
    let mut saved = Vec::with_capacity(images.len());
    for (i, image) in images.iter().enumerate() {
        let path = target.path_for(task_id, i + 1, numbered, extension_for(image));
        tokio::fs::write(&path, &image.bytes)
            .await
            .map_err(|source| ClientError::Save {
                path: path.clone(),
                source,
            })?;
        saved.push(path);
    }
    Ok(saved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(url: &str, content_type: Option<&str>, bytes: &'static [u8]) -> FetchedImage {
        FetchedImage {
            url: url.to_string(),
            bytes: bytes::Bytes::from_static(bytes),
            content_type: content_type.map(str::to_string),
        }
    }

    #[test]
    fn file_target_single_and_numbered() {
        let t = Target::File(PathBuf::from("out/cat.png"));
        assert_eq!(
            t.path_for("tid", 1, false, "jpg"),
            PathBuf::from("out/cat.png")
        );
        assert_eq!(
            t.path_for("tid", 2, true, "jpg"),
            PathBuf::from("out/cat-2.png")
        );
        let bare = Target::File(PathBuf::from("cat"));
        assert_eq!(bare.path_for("tid", 1, true, "png"), PathBuf::from("cat-1"));
    }

    #[test]
    fn dir_target_uses_task_id() {
        let t = Target::Dir(PathBuf::from("shots"));
        assert_eq!(
            t.path_for("abc", 3, false, "webp"),
            PathBuf::from("shots/abc-3.webp")
        );
        let cwd = Target::from_output(None);
        assert_eq!(
            cwd.path_for("abc", 1, false, "png"),
            PathBuf::from("abc-1.png")
        );
    }

    #[test]
    fn hostile_task_ids_stay_inside_the_directory() {
        let t = Target::Dir(PathBuf::from("shots"));
        assert_eq!(
            t.path_for("../../etc/passwd", 1, false, "png"),
            PathBuf::from("shots/_.._etc_passwd-1.png")
        );
        assert_eq!(
            t.path_for("", 1, false, "png"),
            PathBuf::from("shots/image-1.png")
        );
    }

    #[test]
    fn trailing_slash_or_existing_dir_means_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Target::from_output(Some(dir.path())),
            Target::Dir(dir.path().to_path_buf())
        );
        let fresh = format!("{}/new/", dir.path().display());
        assert!(matches!(
            Target::from_output(Some(Path::new(&fresh))),
            Target::Dir(_)
        ));
        let file = dir.path().join("x.png");
        assert_eq!(Target::from_output(Some(&file)), Target::File(file.clone()));
    }

    #[test]
    fn extension_priority() {
        assert_eq!(
            extension_for(&image("http://h/a/b.jpeg?x=1", Some("image/png"), b"")),
            "jpg"
        );
        assert_eq!(
            extension_for(&image("http://h/a/b", Some("image/webp"), b"")),
            "webp"
        );
        assert_eq!(
            extension_for(&image("http://h/a/b.bin", None, b"GIF89a..")),
            "gif"
        );
        assert_eq!(extension_for(&image("http://h/a/b", None, b"????")), "png");
        assert_eq!(
            extension_for(&image("data:image/jpeg;base64,AA", None, b"")),
            "jpg"
        );
    }

    #[tokio::test]
    async fn save_all_creates_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::Dir(dir.path().join("a/b"));
        let images = [
            image("http://h/x.png", None, b"one"),
            image("http://h/y", Some("image/gif"), b"two"),
        ];
        let saved = save_all(&target, "t1", false, &images).await.unwrap();
        assert_eq!(
            saved,
            vec![
                dir.path().join("a/b/t1-1.png"),
                dir.path().join("a/b/t1-2.gif")
            ]
        );
        assert_eq!(std::fs::read(&saved[1]).unwrap(), b"two");
    }
}
