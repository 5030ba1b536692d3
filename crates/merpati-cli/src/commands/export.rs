//! `merpati export [NAME] [--format txt|json|html] [--output FILE]`: a conversation (or all of
//! them) as a record a person can keep and read without Merpati.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use merpati_control::Home;
use merpati_control::protocol::{
    ContactShowParams, Direction, MAX_MESSAGES_LIMIT, MessageView, MessagesParams, method,
};

use crate::cli::parse_name;
use crate::commands::connect;
use crate::output::{Output, local_time, shown_text, status_text};

/// The forms an export takes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Format {
    /// Plain text: one message per paragraph, with time, who wrote it and, for yours, the status
    Txt,
    /// One JSON object per line, the control API's `Message`, oldest first
    Json,
    /// One HTML page, readable in any browser
    Html,
}

/// Arguments of `merpati export`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Only the conversation with this contact; all of them when absent
    #[arg(value_parser = parse_name)]
    name: Option<String>,
    /// The form of the record
    #[arg(long, value_enum, default_value = "txt")]
    format: Format,
    /// Write it to this file (created, or replaced) instead of standard output
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Writes the record.
pub(crate) fn run(home: &Home, out: &mut Output, mut args: Args) -> Result<()> {
    if let Some(name) = &args.name {
        let contact = connect(home)?.call::<method::ContactShow>(ContactShowParams { name: name.clone() })?;
        args.name = Some(contact.name);
    }
    let messages = all_messages(home, args.name.as_deref())?;
    let record = match args.format {
        Format::Txt => txt(&messages),
        Format::Json => json(&messages)?,
        Format::Html => html(args.name.as_deref(), &messages),
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, record).with_context(|| format!("writing {}", path.display()))?;
            if out.is_json() {
                return out.object(&serde_json::json!({ "file": path, "messages": messages.len() }));
            }
            out.line(format_args!("Wrote {} message(s) to {}.", messages.len(), path.display()))
        }
        None => std::io::stdout().write_all(record.as_bytes()).context("writing the record"),
    }
}

/// Every message of the conversation (or of all), oldest first, read a page at a time from the
/// newest back.
fn all_messages(home: &Home, with: Option<&str>) -> Result<Vec<MessageView>> {
    let mut client = connect(home)?;
    let mut pages: Vec<Vec<MessageView>> = Vec::new();
    let mut before = None;
    loop {
        let answer = client.call::<method::Messages>(MessagesParams {
            group: None,
            with: with.map(str::to_owned),
            limit: Some(MAX_MESSAGES_LIMIT),
            before: before.clone(),
        })?;
        let page = answer.messages;
        let Some(first) = page.first() else { break };
        before = Some(first.id.clone());
        // A page of long texts stops short of the limit: older messages may still follow.
        let full = page.len() == MAX_MESSAGES_LIMIT as usize || answer.cut;
        pages.push(page);
        if !full {
            break;
        }
    }
    Ok(pages.into_iter().rev().flatten().collect())
}

/// Who wrote `message`: "me", or the contact.
fn author(message: &MessageView) -> &str {
    match message.direction {
        Direction::Out => "me",
        Direction::In => &message.contact,
    }
}

fn txt(messages: &[MessageView]) -> String {
    let mut record = String::new();
    for message in messages {
        let to = match message.direction {
            Direction::Out => format!(" → {}", message.contact),
            Direction::In => String::new(),
        };
        let status =
            message.status.map(|s| format!("  [{}]", status_text(s, message.stored))).unwrap_or_default();
        let _ = writeln!(record, "{}  {}{to}{status}", local_time(message.time), author(message));
        for line in shown_text(message).lines() {
            let _ = writeln!(record, "    {line}");
        }
        record.push('\n');
    }
    record
}

fn json(messages: &[MessageView]) -> Result<String> {
    let mut record = String::new();
    for message in messages {
        record.push_str(&serde_json::to_string(message)?);
        record.push('\n');
    }
    Ok(record)
}

fn html(with: Option<&str>, messages: &[MessageView]) -> String {
    let title = match with {
        Some(name) => format!("Conversation with {}", escape(name)),
        None => "Conversations".to_owned(),
    };
    let mut page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\n\
         <style>body{{font-family:sans-serif;max-width:48em;margin:auto}}\
         .m{{margin:.6em 0;padding:.4em .6em;border-radius:.4em;background:#eef}}\
         .out{{background:#efe;margin-left:4em}}.h{{color:#555;font-size:.85em}}\
         .t{{white-space:pre-wrap}}</style></head>\n<body><h1>{title}</h1>\n"
    );
    for message in messages {
        let class = if message.direction == Direction::Out { "m out" } else { "m" };
        let status = message
            .status
            .map(|s| format!(" · {}", escape(&status_text(s, message.stored))))
            .unwrap_or_default();
        let _ = writeln!(
            page,
            "<div class=\"{class}\"><div class=\"h\">{} · {}{status}</div><div class=\"t\">{}</div></div>",
            escape(&local_time(message.time)),
            escape(author(message)),
            escape(&shown_text(message))
        );
    }
    page.push_str("</body></html>\n");
    page
}

/// Text made safe inside HTML elements and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_what_a_contact_wrote() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }
}
