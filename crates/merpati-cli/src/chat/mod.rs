//! `merpati chat`: a full-screen chat in the terminal. Conversations (contacts, then groups) and
//! contact requests on the left with unread counts, the open conversation with each sent
//! message's tick (in a group, how many members have it) updating live, a multi-line input,
//! scroll back through the whole history.
//!
//! The CLI has no async runtime: one thread keeps a subscription to the daemon ([`link`]), the
//! main thread reads keys and draws. [`app`] holds the state and is tested without a terminal;
//! [`view`] draws it.

mod app;
mod daemon;
mod input;
mod link;
mod transcript;
mod view;

use std::io::{IsTerminal, stdout};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Duration;

use anyhow::{Context, Result};
use merpati_control::Home;
use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{
    self, DisableBracketedPaste, DisableFocusChange, EnableBracketedPaste, EnableFocusChange, Event,
    KeyEventKind,
};
use ratatui::crossterm::execute;

use crate::cli::parse_name;
use crate::commands::connect;
use crate::exit::{Code, Failure};
use app::{App, LinkState};
use daemon::{ControlDaemon, stored_name};
use link::Update;

/// How long the screen waits for a key before it looks at the daemon's news again.
const TICK: Duration = Duration::from_millis(50);

/// Arguments of `merpati chat`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Open the conversation with this contact first
    #[arg(value_parser = parse_name)]
    name: Option<String>,
}

/// Runs the chat until the person quits.
pub(crate) fn run(home: &Home, args: Args) -> Result<()> {
    if !std::io::stdin().is_terminal() || !stdout().is_terminal() {
        return Err(Failure::new(
            Code::Other,
            "merpati chat needs a terminal; in scripts use merpati messages --follow and merpati send",
        )
        .into());
    }
    // Before the screen is taken over, so these read as plain errors with their exit codes:
    // no identity (4), no daemon (3), no such contact (5).
    connect(home)?;
    let first = args.name.map(|typed| stored_name(home, &typed)).transpose()?;
    let updates = link::spawn(home.clone()).context("cannot start the chat's link to merpatid")?;
    let mut daemon = ControlDaemon::new(home.clone());
    let mut app = App::new(first);

    let mut terminal = match ratatui::try_init() {
        Ok(terminal) => terminal,
        Err(e) => {
            // Whatever part of the set-up happened (raw mode) is undone.
            ratatui::restore();
            return Err(e).context("cannot set up the terminal");
        }
    };
    // Pasted text arrives whole, newlines and all, instead of as keys (Enter would send); focus
    // changes say whether what arrives is on anyone's screen.
    let _ = execute!(stdout(), EnableBracketedPaste, EnableFocusChange);
    // ratatui's panic hook restores the terminal; these two modes are undone before it.
    let restore_terminal = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = execute!(stdout(), DisableBracketedPaste, DisableFocusChange);
        restore_terminal(info);
    }));
    let result = event_loop(&mut terminal, &mut app, &mut daemon, &updates);
    let _ = execute!(stdout(), DisableBracketedPaste, DisableFocusChange);
    ratatui::try_restore().context("cannot restore the terminal")?;
    result
}

fn event_loop(
    terminal: &mut DefaultTerminal,
    app: &mut App,
    daemon: &mut ControlDaemon,
    updates: &Receiver<Update>,
) -> Result<()> {
    let mut dirty = true;
    while !app.quit {
        loop {
            match updates.try_recv() {
                Ok(update) => {
                    app.update(update, daemon);
                    dirty = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    // The link thread died: say so rather than show a screen that looks live.
                    app.link = LinkState::Down("the link to merpatid stopped".into());
                    break;
                }
            }
        }
        if dirty {
            terminal.draw(|frame| view::draw(frame, app)).context("cannot draw the chat")?;
            dirty = false;
        }
        if event::poll(TICK).context("cannot read the terminal")? {
            match event::read().context("cannot read the terminal")? {
                Event::Key(key) if key.kind != KeyEventKind::Release => app.key(key, daemon),
                Event::Paste(text) => app.paste(&text),
                Event::FocusGained => app.focus(true, daemon),
                Event::FocusLost => app.focus(false, daemon),
                _ => {}
            }
            dirty = true;
        }
    }
    Ok(())
}
