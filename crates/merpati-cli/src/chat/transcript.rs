//! The open conversation as screen lines of a given width: a line per day where the date
//! changes, each message as `18:02 you  text  ✓✓ delivered` (in a group `18:03 dewi  text` and
//! `18:04 you  text  delivered 2/3`), long texts wrapped under their first line. Texts from other
//! people are escaped first, so a message cannot drive the terminal.

use chrono::{DateTime, Local};
use std::collections::HashMap;

use merpati_control::protocol::{Direction, MessageId, MessageStatus, MessageView, TransferUpdate};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use unicode_width::UnicodeWidthChar;

use crate::output::{sanitize, status_text};

/// The longest a contact's name is shown before each of their messages, in characters.
const NAME_SHOWN: usize = 16;
/// Narrower than this beside the prefix, texts go on the next line, indented.
const MIN_TEXT_WIDTH: usize = 12;
/// The indent of texts that do not fit beside their prefix.
const NARROW_INDENT: usize = 2;

/// Every line of `messages` at `width` columns, oldest first; files on the move show how far
/// they are (`transfers`).
pub(crate) fn lines(
    messages: &[MessageView],
    transfers: &HashMap<MessageId, TransferUpdate>,
    width: u16,
) -> Vec<Line<'static>> {
    let width = usize::from(width).max(1);
    let mut lines = Vec::new();
    let mut last_day = None;
    for message in messages {
        let time = local(message.time.millis());
        let day = time.map(|t| t.date_naive());
        if day != last_day {
            if let Some(time) = time {
                let label = format!("── {} ──", time.format("%a %-d %b %Y"));
                lines.push(Line::styled(label, Style::new().fg(Color::DarkGray)));
            }
            last_day = day;
        }
        push_message(&mut lines, message, transfers.get(&message.id), time, width);
    }
    lines
}

/// How an outgoing message's status is shown after its text: a tick and the status in words. A
/// group's message says how many members have it instead (`delivered 2/3`): its status is its
/// least advanced copy's, so the ticks would hide the members who have it already. `○` still
/// marks a copy waiting to leave, and a failure is told as one.
pub(crate) fn status_mark(message: &MessageView) -> Option<(String, Style)> {
    if message.direction != Direction::Out {
        return None;
    }
    let status = message.status?;
    let group_count = message.group.as_ref().and_then(|g| Some((g.delivered?, g.members?)));
    if let Some((delivered, members)) = group_count
        && status != MessageStatus::Failed
    {
        let words = format!("delivered {delivered}/{members}");
        let style = Style::new().fg(if delivered >= members { Color::Gray } else { Color::DarkGray });
        let mark = match (status, &message.reason) {
            (MessageStatus::Queued, Some(reason)) => format!("  ○ {words}: {}", sanitize(reason)),
            (MessageStatus::Queued, None) => format!("  ○ {words}"),
            _ => format!("  {words}"),
        };
        return Some((mark, style));
    }
    let words = status_text(status, message.stored);
    let (tick, style) = match status {
        MessageStatus::Queued => ("○", Style::new().fg(Color::DarkGray)),
        MessageStatus::Sent | MessageStatus::Stored => ("✓", Style::new().fg(Color::DarkGray)),
        MessageStatus::Delivered => ("✓✓", Style::new().fg(Color::Gray)),
        MessageStatus::Read => ("✓✓", Style::new().fg(Color::Cyan)),
        MessageStatus::Failed => ("✗", Style::new().fg(Color::Red)),
    };
    let mark = match &message.reason {
        Some(reason) => format!("  {tick} {words}: {}", sanitize(reason)),
        None => format!("  {tick} {words}"),
    };
    Some((mark, style))
}

fn push_message(
    lines: &mut Vec<Line<'static>>,
    message: &MessageView,
    transfer: Option<&TransferUpdate>,
    time: Option<DateTime<Local>>,
    width: usize,
) {
    let (who, who_style) = match message.direction {
        Direction::Out => ("you".to_owned(), Style::new().fg(Color::Green).add_modifier(Modifier::BOLD)),
        Direction::In => {
            // In a group, the sender: `contact` is the group's name there.
            let from = message.group.as_ref().and_then(|g| g.from.as_deref()).unwrap_or(&message.contact);
            let name: String = sanitize(from).chars().take(NAME_SHOWN).collect();
            (name, Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD))
        }
    };
    let clock = time.map_or_else(|| "--:--".to_owned(), |t| t.format("%H:%M").to_string());
    let prefix = [(format!("{clock} "), Style::new().fg(Color::DarkGray)), (format!("{who}  "), who_style)];
    let prefix_width: usize = prefix.iter().map(|(text, _)| text_width(text)).sum();
    // Beside the prefix when there is room, else below it.
    let (indent, first_avail) = if width >= prefix_width + MIN_TEXT_WIDTH {
        (prefix_width, width - prefix_width)
    } else {
        lines.push(Line::from(spans(prefix.iter().flat_map(|(t, s)| t.chars().map(move |c| (c, *s))))));
        (NARROW_INDENT, width.saturating_sub(NARROW_INDENT).max(1))
    };
    let rest_avail = width.saturating_sub(indent).max(1);
    let mut first_row = indent == prefix_width;

    let text = crate::output::shown_with(message, transfer);
    let paragraphs: Vec<&str> = text.split('\n').collect();
    let last = paragraphs.len() - 1;
    for (i, paragraph) in paragraphs.into_iter().enumerate() {
        let mut body: Vec<(char, Style)> = sanitize(paragraph).chars().map(|c| (c, Style::new())).collect();
        if i == last
            && let Some((mark, style)) = status_mark(message)
        {
            body.extend(mark.chars().map(|c| (c, style)));
        }
        for row in wrap(&body, if first_row { first_avail } else { rest_avail }, rest_avail) {
            let lead: Vec<(char, Style)> = if first_row {
                prefix.iter().flat_map(|(t, s)| t.chars().map(move |c| (c, *s))).collect()
            } else {
                std::iter::repeat_n((' ', Style::new()), indent).collect()
            };
            first_row = false;
            lines.push(Line::from(spans(lead.into_iter().chain(row))));
        }
    }
}

/// `chars` cut into rows: the first at most `first` columns wide, the others `rest`. An empty
/// text is one empty row. A character wider than a whole row gets a row of its own.
pub(crate) fn wrap<T: Copy>(chars: &[(char, T)], first: usize, rest: usize) -> Vec<Vec<(char, T)>> {
    let mut rows = vec![Vec::new()];
    let mut used = 0;
    let mut avail = first;
    for &(c, style) in chars {
        let w = c.width().unwrap_or(0);
        let row_is_empty = rows.last().is_none_or(Vec::is_empty);
        if used + w > avail && !row_is_empty {
            rows.push(Vec::new());
            used = 0;
            avail = rest;
        }
        if let Some(row) = rows.last_mut() {
            row.push((c, style));
        }
        used += w;
    }
    rows
}

/// Display columns of `text`.
pub(crate) fn text_width(text: &str) -> usize {
    text.chars().map(|c| c.width().unwrap_or(0)).sum()
}

/// Runs of equally styled characters as spans.
fn spans(chars: impl IntoIterator<Item = (char, Style)>) -> Vec<Span<'static>> {
    let mut spans: Vec<Span<'static>> = Vec::new();
    let mut run = String::new();
    let mut run_style = None;
    for (c, style) in chars {
        if run_style.is_some_and(|s| s != style) {
            spans.push(Span::styled(std::mem::take(&mut run), run_style.unwrap_or_default()));
        }
        run_style = Some(style);
        run.push(c);
    }
    if !run.is_empty() {
        spans.push(Span::styled(run, run_style.unwrap_or_default()));
    }
    spans
}

/// A Unix time in milliseconds in the local time zone; `None` if out of range.
pub(crate) fn local(millis: u64) -> Option<DateTime<Local>> {
    let millis = i64::try_from(millis).ok()?;
    Some(DateTime::from_timestamp_millis(millis)?.with_timezone(&Local))
}

#[cfg(test)]
mod tests {
    use super::*;
    use merpati_control::protocol::{MessageId, StoredCount};
    use merpati_proto::Timestamp;

    fn message(direction: Direction, text: &str, status: Option<MessageStatus>) -> MessageView {
        MessageView {
            id: "00112233445566778899aabbccddeeff".parse::<MessageId>().expect("a valid id"),
            direction,
            contact: "bob".into(),
            time: Timestamp(1_763_748_220_000),
            text: text.into(),
            status,
            stored: None,
            reason: None,
            seq: None,
            file: None,
            group: None,
        }
    }

    fn plain(lines: &[Line<'_>]) -> Vec<String> {
        lines.iter().map(|line| line.spans.iter().map(|s| s.content.as_ref()).collect()).collect()
    }

    #[test]
    fn a_message_is_time_name_text_and_tick() {
        let shown = plain(&lines(
            &[message(Direction::Out, "see you at 6", Some(MessageStatus::Read))],
            &HashMap::new(),
            60,
        ));
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(shown[0].starts_with("── "), "a day line first: {shown:?}");
        assert!(shown[1].ends_with(" you  see you at 6  ✓✓ read"), "{shown:?}");
        let incoming = plain(&lines(&[message(Direction::In, "great", None)], &HashMap::new(), 60));
        assert!(incoming[1].ends_with(" bob  great"), "no tick on incoming: {incoming:?}");
    }

    #[test]
    fn long_and_multi_line_texts_wrap_under_their_start() {
        let text = format!("{}\nsecond line", "word ".repeat(20));
        let shown = plain(&lines(&[message(Direction::In, &text, None)], &HashMap::new(), 40));
        let indent = " ".repeat("12:34 bob  ".len());
        assert!(shown.len() >= 5, "{shown:?}");
        for row in &shown[2..] {
            assert!(row.starts_with(&indent), "continuation rows are indented: {shown:?}");
            assert!(text_width(row) <= 40, "no row is wider than the pane: {shown:?}");
        }
        assert_eq!(shown.last().map(|r| r.trim()), Some("second line"));
    }

    #[test]
    fn what_a_contact_wrote_cannot_drive_the_terminal() {
        let shown = plain(&lines(&[message(Direction::In, "\u{1b}[2Jgotcha\tx", None)], &HashMap::new(), 60));
        assert!(shown[1].contains("\\u{1b}[2Jgotcha\\tx"), "{shown:?}");
    }

    #[test]
    fn stored_shows_the_relay_count_and_a_failure_says_why() {
        let mut stored = message(Direction::Out, "x", Some(MessageStatus::Stored));
        stored.stored = Some(StoredCount { accepted: 1, total: 2 });
        assert_eq!(status_mark(&stored).map(|(m, _)| m), Some("  ✓ stored 1/2".to_owned()));
        let mut failed = message(Direction::Out, "x", Some(MessageStatus::Failed));
        failed.reason = Some("the contact was removed".into());
        assert_eq!(
            status_mark(&failed).map(|(m, _)| m),
            Some("  ✗ failed: the contact was removed".to_owned())
        );
    }

    #[test]
    fn a_narrow_pane_puts_the_text_under_the_name() {
        let shown = plain(&lines(&[message(Direction::In, "hello there", None)], &HashMap::new(), 14));
        assert!(shown[1].ends_with("bob  "), "{shown:?}");
        assert!(shown[2].starts_with("  hello"), "{shown:?}");
    }

    #[test]
    fn wrapping_counts_columns_not_characters() {
        let wide: Vec<(char, ())> = "日本語です".chars().map(|c| (c, ())).collect();
        let rows = wrap(&wide, 4, 4);
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|row| row.len() <= 2));
        // A character wider than the row still goes somewhere, on a row of its own.
        assert_eq!(wrap(&wide, 1, 1).len(), 5);
        assert_eq!(wrap::<()>(&[], 5, 5), vec![Vec::new()]);
    }
}
