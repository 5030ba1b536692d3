//! Files on the command line: reading one to send (`send --file`), writing one out (`save`),
//! and naming a file's media type from its extension.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use data_encoding::BASE64;
use merpati_control::Home;
use merpati_control::protocol::{MessageId, MessageStatusParams, method};
use merpati_proto::blob::{MAX_INLINE_LEN, is_safe_name};
use serde_json::json;

use crate::commands::connect;
use crate::exit::{Code, Failure};
use crate::output::{Output, sanitize};

/// A file read to be sent: its name, media type and bytes in base64.
#[derive(Debug)]
pub(crate) struct FileToSend {
    pub(crate) name: String,
    pub(crate) media_type: String,
    pub(crate) data: String,
}

/// Reads `path` to send it, refusing before anything is read a file larger than this version
/// sends, or one whose name cannot be a file name at the other end.
pub(crate) fn read_for_sending(path: &Path, media_type: Option<&str>) -> Result<FileToSend> {
    let shown = path.display();
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .filter(|name| is_safe_name(name))
        .ok_or_else(|| {
            Failure::new(
                Code::InvalidFile,
                format!("{shown} has no name a file can be saved under (UTF-8, 1 to 255 bytes, no control characters)"),
            )
        })?
        .to_owned();
    let file = fs::File::open(path).with_context(|| format!("cannot open {shown}"))?;
    let len = file.metadata().with_context(|| format!("cannot read {shown}"))?.len();
    if len > MAX_INLINE_LEN as u64 {
        return Err(Failure::new(
            Code::InvalidFile,
            format!(
                "{shown} is {} KiB: this version sends files of at most {} KiB ({MAX_INLINE_LEN} bytes)",
                len.div_ceil(1024),
                MAX_INLINE_LEN / 1024
            ),
        )
        .into());
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // Read at most one byte more than allowed: a file growing meanwhile is refused too.
    file.take(MAX_INLINE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {shown}"))?;
    if bytes.len() > MAX_INLINE_LEN {
        return Err(
            Failure::new(Code::InvalidFile, format!("{shown} grew past 48 KiB while it was read")).into()
        );
    }
    let media_type = media_type.map_or_else(|| media_type_of(&name).to_owned(), str::to_owned);
    Ok(FileToSend { name, media_type, data: BASE64.encode(&bytes) })
}

/// The media type a file name's extension suggests; `application/octet-stream` when unknown.
pub(crate) fn media_type_of(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase()).unwrap_or_default();
    match extension.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        "txt" | "text" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "json" => "application/json",
        "zip" => "application/zip",
        "ogg" | "opus" => "audio/ogg",
        "m4a" => "audio/mp4",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "odt" => "application/vnd.oasis.opendocument.text",
        _ => "application/octet-stream",
    }
}

/// Arguments of `merpati save`.
#[derive(Debug, clap::Args)]
pub(crate) struct SaveArgs {
    /// The message's id (as `merpati messages` shows it)
    id: MessageId,
    /// Where to write the file [default: its own name, in the current directory]
    path: Option<PathBuf>,
    /// Replace a file that is there already
    #[arg(long)]
    force: bool,
}

/// `merpati save ID [PATH]`: writes out the file a message carries.
pub(crate) fn save(home: &Home, out: &mut Output, args: SaveArgs) -> Result<()> {
    let file = connect(home)?.call::<method::MessageFile>(MessageStatusParams { id: args.id.clone() })?;
    let data = BASE64
        .decode(file.data.as_bytes())
        .map_err(|_| Failure::new(Code::Other, "merpatid sent a file that is not base64"))?;
    // The name was checked when it arrived; checked again, it is never a path.
    if !is_safe_name(&file.name) {
        return Err(Failure::new(Code::Other, "the file's name cannot be used as a file name here").into());
    }
    let path = args.path.unwrap_or_else(|| PathBuf::from(&file.name));
    let shown = path.display();
    let mut options = OpenOptions::new();
    options.write(true);
    if args.force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut written = match options.open(&path) {
        Ok(written) => written,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Failure::new(
                Code::Other,
                format!("{shown} exists: give another path, or --force to replace it"),
            )
            .into());
        }
        Err(e) => return Err(e).with_context(|| format!("cannot write {shown}")),
    };
    written
        .write_all(&data)
        .and_then(|()| written.sync_all())
        .with_context(|| format!("cannot write {shown}"))?;
    if out.is_json() {
        out.object(&json!({ "id": args.id, "path": path, "size": data.len() }))
    } else {
        out.line(format_args!("saved {} ({} bytes) to {}", sanitize(&file.name), data.len(), shown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_come_from_the_extension() {
        assert_eq!(media_type_of("photo.JPG"), "image/jpeg");
        assert_eq!(media_type_of("note.opus"), "audio/ogg");
        assert_eq!(media_type_of("README"), "application/octet-stream");
        assert_eq!(media_type_of("archive.tar.gz"), "application/octet-stream");
    }

    #[test]
    fn files_too_large_or_badly_named_are_refused_before_sending() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.bin");
        fs::write(&big, vec![0u8; MAX_INLINE_LEN + 1]).unwrap();
        let error = read_for_sending(&big, None).unwrap_err();
        assert!(error.to_string().contains("at most 48 KiB"), "{error}");
        let small = dir.path().join("note.txt");
        fs::write(&small, b"hello").unwrap();
        let file = read_for_sending(&small, None).unwrap();
        assert_eq!((file.name.as_str(), file.media_type.as_str()), ("note.txt", "text/plain"));
        assert_eq!(BASE64.decode(file.data.as_bytes()).unwrap(), b"hello");
        assert_eq!(read_for_sending(&small, Some("text/x-note")).unwrap().media_type, "text/x-note");
    }
}
