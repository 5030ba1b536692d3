//! `merpati search TEXT [NAME]`: the newest messages holding a text, whatever its case.

use anyhow::Result;
use merpati_control::Home;
use merpati_control::protocol::{MAX_MESSAGES_LIMIT, MAX_SEARCH_LEN, SearchParams, method};

use crate::cli::parse_name;
use crate::commands::connect;
use crate::commands::messages::print;
use crate::output::Output;

/// Arguments of `merpati search`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The text to look for; upper and lower case match alike
    #[arg(value_parser = parse_text)]
    text: String,
    /// Only the conversation with this contact
    #[arg(value_parser = parse_name)]
    name: Option<String>,
    /// At most this many of the newest matches [default: 100]
    #[arg(long, short = 'n', value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_MESSAGES_LIMIT)))]
    limit: Option<u32>,
}

/// 1 to [`MAX_SEARCH_LEN`] bytes.
fn parse_text(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > MAX_SEARCH_LEN {
        return Err(format!("the text to look for must be 1 to {MAX_SEARCH_LEN} bytes"));
    }
    Ok(text.to_owned())
}

/// Prints the matches, oldest first, one line each as `messages` does.
pub(crate) fn run(home: &Home, out: &mut Output, args: Args) -> Result<()> {
    let found = connect(home)?.call::<method::MessagesSearch>(SearchParams {
        text: args.text.clone(),
        with: args.name,
        limit: args.limit,
    })?;
    for message in &found.messages {
        print(out, message)?;
    }
    if found.messages.is_empty() && !out.is_json() {
        out.line(format_args!("No messages hold \"{}\".", crate::output::sanitize(&args.text)))?;
    }
    Ok(())
}
