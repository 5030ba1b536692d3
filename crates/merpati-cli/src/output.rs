//! Everything `merpati` writes to stdout goes through here: human lines or, with `--json`, one
//! JSON object per line. Text that came from other people is made safe for a terminal first.

use std::borrow::Cow;
use std::fmt::{Display, Write as _};
use std::io::{self, Write};

use anyhow::{Context, Result};
use merpati_control::protocol::{
    Direction, MessageStatus, MessageView, StoredCount, TransferDirection, TransferUpdate,
};
use merpati_proto::Timestamp;
use serde::Serialize;

/// Standard output, in human or JSON form.
#[derive(Debug)]
pub(crate) struct Output {
    json: bool,
}

impl Output {
    /// Output in JSON lines when `json`, human lines otherwise.
    pub(crate) fn new(json: bool) -> Output {
        Output { json }
    }

    /// Whether `--json` was given.
    pub(crate) fn is_json(&self) -> bool {
        self.json
    }

    /// Writes one human line (or several, if `text` holds newlines).
    pub(crate) fn line(&mut self, text: impl Display) -> Result<()> {
        write_flushed(format_args!("{text}\n"))
    }

    /// Writes `value` as one JSON line.
    pub(crate) fn object(&mut self, value: &impl Serialize) -> Result<()> {
        let line = serde_json::to_string(value).context("cannot encode the output as JSON")?;
        write_flushed(format_args!("{line}\n"))
    }
}

/// Flushes after every line so `--follow` output reaches a pipe as it happens.
fn write_flushed(args: std::fmt::Arguments<'_>) -> Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_fmt(args).and_then(|()| stdout.flush()).context("cannot write to standard output")
}

/// `text` with control characters and bidirectional overrides shown as escapes (`\n`, `\u{1b}`,
/// `\u{202e}`), so a message cannot move the cursor, recolour the terminal, fake extra lines or
/// reverse how the rest of a line reads.
pub(crate) fn sanitize(text: &str) -> Cow<'_, str> {
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A message's text as people read it: a file it carries named first, `[file photo.jpg, 23.4
/// KiB]`, then the caption.
pub(crate) fn shown_text(message: &MessageView) -> Cow<'_, str> {
    shown_with(message, None)
}

/// [`shown_text`], with a file's transfer in progress in its label (`uploading 45%`).
pub(crate) fn shown_with<'a>(message: &'a MessageView, transfer: Option<&TransferUpdate>) -> Cow<'a, str> {
    let Some(file) = &message.file else { return Cow::Borrowed(&message.text) };
    let moving = transfer.filter(|t| t.done < t.size && (t.direction == TransferDirection::Up || !file.here));
    let away = match (moving, &file.failed) {
        (Some(t), _) => match &t.waiting {
            Some(why) => {
                format!(", {} {}, waiting: {why}", transfer_verb(t.direction), percent(t.done, t.size))
            }
            None => format!(", {} {}", transfer_verb(t.direction), percent(t.done, t.size)),
        },
        (None, Some(why)) if message.direction == Direction::Out => format!(", {why}"),
        (None, Some(why)) => format!(", not coming: {why}"),
        (None, None) if !file.here => ", not on this device".to_owned(),
        (None, None) => String::new(),
    };
    let label = format!("[file {}, {}{away}]", file.name, size_text(file.size));
    if message.text.is_empty() { Cow::Owned(label) } else { Cow::Owned(format!("{label} {}", message.text)) }
}

/// What a transfer does, in a word.
pub(crate) fn transfer_verb(direction: TransferDirection) -> &'static str {
    match direction {
        TransferDirection::Up => "uploading",
        TransferDirection::Down => "fetching",
    }
}

/// `done` of `size` as a whole percentage, never 100 % before the end.
pub(crate) fn percent(done: u64, size: u64) -> String {
    let whole = if size == 0 { 100 } else { (u128::from(done) * 100 / u128::from(size)) as u64 };
    format!("{}%", if done < size { whole.min(99) } else { 100 })
}

/// A size as people read it: `812 B`, `23.4 KiB`, `1.5 MiB`.
pub(crate) fn size_text(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

/// A status as people read it: the wire name, with the relay count after `stored` (`stored 1/2`:
/// one of the contact's two relays holds the message).
pub(crate) fn status_text(status: MessageStatus, stored: Option<StoredCount>) -> String {
    match (status, stored) {
        (MessageStatus::Stored, Some(count)) => format!("stored {count}"),
        (status, _) => status.to_string(),
    }
}

/// A time in the local time zone, `2026-11-21 14:05:09`; the raw milliseconds if out of range.
pub(crate) fn local_time(time: Timestamp) -> String {
    i64::try_from(time.millis())
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|utc| utc.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| time.millis().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_escapes_what_could_fool_a_terminal() {
        assert_eq!(sanitize("hello, wörld ✓"), "hello, wörld ✓");
        assert_eq!(sanitize("a\nb\tc\r"), "a\\nb\\tc\\r");
        assert_eq!(sanitize("\u{1b}[2J"), "\\u{1b}[2J");
        assert_eq!(sanitize("abc\u{202e}fed"), "abc\\u{202e}fed");
    }

    #[test]
    fn statuses_show_the_relay_count_after_stored() {
        let count = Some(StoredCount { accepted: 1, total: 2 });
        assert_eq!(status_text(MessageStatus::Stored, count), "stored 1/2");
        assert_eq!(status_text(MessageStatus::Stored, None), "stored");
        assert_eq!(status_text(MessageStatus::Delivered, None), "delivered");
        // A count next to another status is stale news and not shown.
        assert_eq!(status_text(MessageStatus::Read, count), "read");
    }

    #[test]
    fn local_time_is_formatted_or_raw() {
        assert_eq!(local_time(Timestamp(1_750_000_000_000)).len(), "2025-06-15 15:06:40".len());
        assert_eq!(local_time(Timestamp(u64::MAX)), u64::MAX.to_string());
    }
}

#[cfg(test)]
mod transfer_tests {
    use merpati_control::protocol::{FileView, MessageId};

    use super::*;

    fn photo(here: bool) -> MessageView {
        MessageView {
            id: MessageId::from_bytes([1; 16]),
            direction: Direction::In,
            contact: "bob".into(),
            time: merpati_proto::Timestamp(0),
            text: "the view".into(),
            status: None,
            stored: None,
            reason: None,
            seq: None,
            file: Some(FileView {
                name: "view.jpg".into(),
                media_type: "image/jpeg".into(),
                size: 10 * 1_048_576,
                here,
                failed: None,
            }),
            group: None,
        }
    }

    fn moved(direction: TransferDirection, done: u64) -> TransferUpdate {
        TransferUpdate {
            id: MessageId::from_bytes([1; 16]),
            direction,
            done,
            size: 10 * 1_048_576,
            waiting: None,
        }
    }

    #[test]
    fn a_file_on_the_move_says_how_far_it_is() {
        assert_eq!(shown_text(&photo(false)), "[file view.jpg, 10.0 MiB, not on this device] the view");
        let half = moved(TransferDirection::Down, 5 * 1_048_576);
        assert_eq!(
            shown_with(&photo(false), Some(&half)),
            "[file view.jpg, 10.0 MiB, fetching 50%] the view"
        );
        let up = moved(TransferDirection::Up, 1_048_575);
        assert_eq!(shown_with(&photo(true), Some(&up)), "[file view.jpg, 10.0 MiB, uploading 9%] the view");
        let mut paced = moved(TransferDirection::Up, 0);
        paced.waiting = Some("the relay is busy".into());
        assert_eq!(
            shown_with(&photo(true), Some(&paced)),
            "[file view.jpg, 10.0 MiB, uploading 0%, waiting: the relay is busy] the view"
        );
        let done = moved(TransferDirection::Down, 10 * 1_048_576);
        assert_eq!(shown_with(&photo(true), Some(&done)), "[file view.jpg, 10.0 MiB] the view");
        let mut gone = photo(false);
        gone.file.as_mut().unwrap().failed = Some("it expired".into());
        assert_eq!(shown_text(&gone), "[file view.jpg, 10.0 MiB, not coming: it expired] the view");
        assert_eq!(percent(999, 1000), "99%", "never 100% before the end");
        assert_eq!(percent(0, 0), "100%");
    }
}
