//! Files on the command line: reading one to send (`send --file`), writing one out (`save`),
//! and naming a file's media type from its extension.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use data_encoding::BASE64;
use merpati_control::Home;
use merpati_control::protocol::{MessageFileParams, MessageId, SendFileParams, method};
use merpati_proto::blob::{MAX_FILE_LEN, MAX_INLINE_LEN, is_safe_name};
use serde_json::json;

use crate::commands::connect;
use crate::exit::{Code, Failure};
use crate::output::{Output, sanitize};

/// A file read to be sent: its name, media type and either its bytes in base64 (at most 48 KiB)
/// or its absolute path, for the daemon to read.
#[derive(Debug)]
pub(crate) struct FileToSend {
    pub(crate) name: String,
    pub(crate) media_type: String,
    pub(crate) data: String,
    pub(crate) path: Option<String>,
}

impl FileToSend {
    /// The `send.file` params that send it to `to`, with `caption`.
    pub(crate) fn params(self, to: &str, caption: String) -> SendFileParams {
        SendFileParams {
            to: to.to_owned(),
            name: self.name,
            media_type: self.media_type,
            data: self.data,
            path: self.path,
            caption,
        }
    }
}

/// Reads `path` to send it (a file of at most 48 KiB; a larger one, up to 25 MiB, is named by its
/// absolute path for the daemon to read), refusing a file larger than 25 MiB, or one whose name
/// cannot be a file name at the other end.
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
    let media_type = media_type.map_or_else(|| media_type_of(&name).to_owned(), str::to_owned);
    if len > MAX_FILE_LEN {
        return Err(Failure::new(
            Code::InvalidFile,
            format!(
                "{shown} is {:.1} MiB: files of at most 25 MiB ({MAX_FILE_LEN} bytes) can be sent",
                len as f64 / (1024.0 * 1024.0)
            ),
        )
        .into());
    }
    if len > MAX_INLINE_LEN as u64 {
        let absolute = fs::canonicalize(path).with_context(|| format!("cannot read {shown}"))?;
        let absolute = absolute.to_str().map(str::to_owned).ok_or_else(|| {
            Failure::new(
                Code::InvalidFile,
                format!("{shown} has a path that is not UTF-8; copy or rename the file"),
            )
        })?;
        return Ok(FileToSend { name, media_type, data: String::new(), path: Some(absolute) });
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
    Ok(FileToSend { name, media_type, data: BASE64.encode(&bytes), path: None })
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

/// `merpati save ID [PATH]`: writes out the file a message carries, a slice at a time.
pub(crate) fn save(home: &Home, out: &mut Output, args: SaveArgs) -> Result<()> {
    let mut client = connect(home)?;
    let mut ask = |offset: u64| -> Result<(merpati_control::protocol::MessageFileResult, Vec<u8>)> {
        let file = client.call::<method::MessageFile>(MessageFileParams { id: args.id.clone(), offset })?;
        let data = BASE64
            .decode(file.data.as_bytes())
            .map_err(|_| Failure::new(Code::Other, "merpatid sent a file that is not base64"))?;
        Ok((file, data))
    };
    let (file, mut data) = ask(0)?;
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
    let mut saved = 0u64;
    loop {
        written.write_all(&data).with_context(|| format!("cannot write {shown}"))?;
        saved += data.len() as u64;
        if saved >= file.size {
            break;
        }
        if data.is_empty() {
            return Err(Failure::new(
                Code::Other,
                format!("merpatid stopped sending the file at byte {saved}"),
            )
            .into());
        }
        data = ask(saved)?.1;
    }
    written.sync_all().with_context(|| format!("cannot write {shown}"))?;
    if out.is_json() {
        out.object(&json!({ "id": args.id, "path": path, "size": saved }))
    } else {
        out.line(format_args!("saved {} ({} bytes) to {}", sanitize(&file.name), saved, shown))
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
        let by_path = read_for_sending(&big, None).unwrap();
        assert_eq!(by_path.path, Some(fs::canonicalize(&big).unwrap().to_str().unwrap().to_owned()));
        assert!(by_path.data.is_empty(), "the daemon reads a larger file itself");
        let huge = dir.path().join("huge.bin");
        fs::File::create(&huge).unwrap().set_len(MAX_FILE_LEN + 1).unwrap();
        let error = read_for_sending(&huge, None).unwrap_err();
        assert!(error.to_string().contains("at most 25 MiB"), "{error}");
        let small = dir.path().join("note.txt");
        fs::write(&small, b"hello").unwrap();
        let file = read_for_sending(&small, None).unwrap();
        assert_eq!((file.name.as_str(), file.media_type.as_str()), ("note.txt", "text/plain"));
        assert_eq!(BASE64.decode(file.data.as_bytes()).unwrap(), b"hello");
        assert_eq!(read_for_sending(&small, Some("text/x-note")).unwrap().media_type, "text/x-note");
    }
}
