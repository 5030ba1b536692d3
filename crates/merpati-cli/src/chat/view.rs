//! Draws the chat: conversations (contacts, then groups as `#name`) and requests on the left, the
//! open conversation and the input on the right, a line for news and a help bar at the bottom.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use unicode_width::UnicodeWidthChar;

use super::app::{App, LinkState, Pane, Selection, With};
use super::input::Input;
use super::transcript;
use crate::output::{local_time, sanitize};

/// The keys, always on screen.
pub(crate) const HELP: &str =
    "Enter send · Alt+Enter/Ctrl+J new line · Tab next · PgUp/PgDn scroll · /help · Ctrl+C quit";
/// The most rows the input grows to before it scrolls.
const INPUT_ROWS: usize = 6;

/// Draws `app` on `frame`, and tells `app` the size of its conversation pane.
pub(crate) fn draw(frame: &mut Frame<'_>, app: &mut App) {
    let [main, news, help] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(1), Constraint::Length(1)])
            .areas(frame.area());
    let list_width = (main.width / 4).clamp(16, 30);
    let [list, right] = Layout::horizontal([Constraint::Length(list_width), Constraint::Fill(1)]).areas(main);

    draw_list(frame, app, list);
    let input_inner_width = usize::from(right.width.saturating_sub(2)).max(1);
    let (rows, cursor) = input_rows(&app.input, input_inner_width);
    let shown_rows = rows.len().clamp(1, INPUT_ROWS);
    let input_height = u16::try_from(shown_rows).unwrap_or(1) + 2;
    let [conversation, input] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(input_height)]).areas(right);
    draw_conversation(frame, app, conversation);
    draw_input(frame, app, input, &rows, cursor, shown_rows);
    draw_news(frame, app, news);
    frame.render_widget(Paragraph::new(Line::styled(HELP, Style::new().fg(Color::DarkGray))), help);
}

fn draw_list(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let title = match &app.own_name {
        Some(name) => format!(" Merpati · {} ", sanitize(name)),
        None => " Merpati ".to_owned(),
    };
    let block = Block::bordered().title(title);
    let inner_width = usize::from(area.width.saturating_sub(2));
    let heading = Style::new().fg(Color::DarkGray).add_modifier(Modifier::BOLD);
    let mut lines = vec![Line::styled("Conversations", heading)];
    if app.contacts.is_empty() && app.groups.is_empty() {
        lines.push(Line::styled("(none yet)", Style::new().fg(Color::DarkGray)));
    }
    for contact in &app.contacts {
        let selected = app.selection == Selection::Contact(contact.name.clone());
        let dot = if contact.connected {
            Span::styled("● ", Style::new().fg(Color::Green))
        } else {
            Span::raw("  ")
        };
        let unread = if contact.unread > 0 { format!(" {}", contact.unread) } else { String::new() };
        let room = inner_width.saturating_sub(2 + unread.chars().count());
        let name = fit(&sanitize(&contact.name), room);
        let gap = " ".repeat(room.saturating_sub(transcript::text_width(&name)));
        let mut style = Style::new();
        if contact.unread > 0 {
            style = style.add_modifier(Modifier::BOLD);
        }
        if selected {
            style = style.add_modifier(Modifier::REVERSED);
        }
        lines.push(Line::from(vec![dot, Span::styled(format!("{name}{gap}{unread}"), style)]));
    }
    for group in &app.groups {
        let selected = app.selection == Selection::Group(group.id.clone());
        let unread = if group.unread > 0 { format!(" {}", group.unread) } else { String::new() };
        let room = inner_width.saturating_sub(2 + unread.chars().count());
        let name = fit(&format!("#{}", sanitize(&group.name)), room);
        let gap = " ".repeat(room.saturating_sub(transcript::text_width(&name)));
        // A group we are no longer in stays readable, greyed.
        let mut style = if group.role.is_none() { Style::new().fg(Color::DarkGray) } else { Style::new() };
        if group.unread > 0 {
            style = style.add_modifier(Modifier::BOLD);
        }
        if selected {
            style = style.add_modifier(Modifier::REVERSED);
        }
        lines.push(Line::from(vec![Span::raw("  "), Span::styled(format!("{name}{gap}{unread}"), style)]));
    }
    if !app.requests.is_empty() {
        lines.push(Line::raw(""));
        lines.push(Line::styled(format!("Requests ({})", app.requests.len()), heading));
    }
    for request in &app.requests {
        let selected = app.selection == Selection::Request(request.id.clone());
        let who = request
            .suggested_name
            .as_deref()
            .map_or_else(|| request.id.clone(), |n| format!("{}?", sanitize(n)));
        let style = if selected { Style::new().add_modifier(Modifier::REVERSED) } else { Style::new() };
        lines.push(Line::from(vec![
            Span::raw("? "),
            Span::styled(fit(&who, inner_width.saturating_sub(2)), style),
        ]));
    }
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_conversation(frame: &mut Frame<'_>, app: &mut App, area: Rect) {
    let inner = Block::bordered().inner(area);
    app.pane = Pane { width: inner.width.max(1), height: inner.height.max(1) };
    if let Some(request) = app.selected_request() {
        let lines = vec![
            Line::raw(format!("Contact request {}", request.id)),
            Line::raw(match &request.suggested_name {
                Some(name) => format!("From someone who says they are \"{}\" (unverified).", sanitize(name)),
                None => "From someone not in your contacts.".to_owned(),
            }),
            Line::raw(format!("Fingerprint: {}", sanitize(&request.fingerprint))),
            Line::raw(format!(
                "First words: {}",
                request.preview.as_deref().map(sanitize).unwrap_or_default()
            )),
            Line::raw(format!("{} envelope(s) since {}", request.envelopes, local_time(request.first_at))),
            Line::raw(""),
            Line::styled(
                "/accept NAME makes them a contact · /reject deletes the request · /block drops what they send",
                Style::new().fg(Color::Cyan),
            ),
        ];
        let block = Block::bordered().title(" contact request ");
        frame.render_widget(
            Paragraph::new(lines).wrap(ratatui::widgets::Wrap { trim: false }).block(block),
            area,
        );
        return;
    }
    // What the title adds to the name: a contact's node connected, a group's size or that we
    // left it (sending is then refused).
    let about = match app.conversation.as_ref().map(|c| &c.with) {
        Some(With::Contact(name)) if app.contacts.iter().any(|c| c.name == *name && c.connected) => {
            " · connected".to_owned()
        }
        Some(With::Group { id, .. }) => match app.groups.iter().find(|g| g.id == *id) {
            Some(group) if group.role.is_none() => " · you are not a member".to_owned(),
            Some(group) => format!(" · {} members", group.members.len()),
            None => String::new(),
        },
        _ => String::new(),
    };
    let Some(conversation) = &mut app.conversation else {
        let hint = "No conversation open. Add a contact: merpati invite, then merpati contact add INVITE --name NAME";
        let paragraph = Paragraph::new(hint).wrap(ratatui::widgets::Wrap { trim: false });
        frame.render_widget(paragraph.block(Block::bordered()), area);
        return;
    };
    let name = match &conversation.with {
        With::Contact(name) => sanitize(name).into_owned(),
        With::Group { name, .. } => format!("#{}", sanitize(name)),
    };
    let title = format!(" {name}{about} ");
    let (scroll, complete) = (conversation.scroll, conversation.complete);
    let lines = conversation.lines(inner.width);
    let height = usize::from(inner.height);
    let end = lines.len().saturating_sub(scroll);
    let start = end.saturating_sub(height);
    let mut window: Vec<Line<'static>> = lines[start..end].to_vec();
    if start == 0 && !complete {
        window.insert(0, Line::styled("(PgUp for older messages)", Style::new().fg(Color::DarkGray)));
        window.truncate(height);
    }
    let mut block = Block::bordered().title(title);
    if scroll > 0 {
        block = block.title_bottom(Line::styled(" PgDn for newer ", Style::new().fg(Color::Cyan)));
    }
    frame.render_widget(Paragraph::new(window).block(block), area);
}

fn draw_input(
    frame: &mut Frame<'_>,
    app: &App,
    area: Rect,
    rows: &[String],
    cursor: (usize, usize),
    shown: usize,
) {
    let title = match &app.selection {
        Selection::Contact(name) => format!(" message to {} ", sanitize(name)),
        Selection::Group(_) => match app.selected_group() {
            Some(group) => format!(" message to #{} ", sanitize(&group.name)),
            None => " message ".to_owned(),
        },
        Selection::Request(_) => " command (/accept NAME, /reject, /block) ".to_owned(),
        Selection::Nothing => " message ".to_owned(),
    };
    let first = (cursor.0 + 1).saturating_sub(shown);
    let lines: Vec<Line<'_>> =
        rows.iter().skip(first).take(shown).map(|row| Line::raw(row.as_str())).collect();
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(title)), area);
    let x = area.x + 1 + u16::try_from(cursor.1).unwrap_or(0);
    let y = area.y + 1 + u16::try_from(cursor.0 - first).unwrap_or(0);
    frame.set_cursor_position((x.min(area.right().saturating_sub(2)), y));
}

fn draw_news(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let line = match (&app.link, &app.notice) {
        (LinkState::Down(reason), _) => Line::styled(
            format!("merpatid is not reachable ({reason}); reconnecting…"),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
        (_, Some(notice)) if notice.error => Line::styled(notice.text.clone(), Style::new().fg(Color::Red)),
        (_, Some(notice)) => Line::styled(notice.text.clone(), Style::new().fg(Color::Cyan)),
        (LinkState::Connecting, None) => Line::raw("connecting to merpatid…"),
        (LinkState::Up, None) => Line::raw(""),
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// The input's text cut into rows `width` columns wide (and at its newlines), and the cursor's
/// row and column among them.
pub(crate) fn input_rows(input: &Input, width: usize) -> (Vec<String>, (usize, usize)) {
    let mut rows = vec![String::new()];
    let mut column = 0;
    let mut cursor = None;
    for (i, c) in input.text().chars().enumerate() {
        if c == '\n' {
            if i == input.cursor() {
                cursor = Some((rows.len() - 1, column));
            }
            rows.push(String::new());
            column = 0;
            continue;
        }
        let w = c.width().unwrap_or(0);
        if column + w > width && column > 0 {
            rows.push(String::new());
            column = 0;
        }
        if i == input.cursor() {
            cursor = Some((rows.len() - 1, column));
        }
        if let Some(row) = rows.last_mut() {
            row.push(c);
        }
        column += w;
    }
    let cursor = cursor.unwrap_or_else(|| {
        if column >= width {
            rows.push(String::new());
            (rows.len() - 1, 0)
        } else {
            (rows.len() - 1, column)
        }
    });
    (rows, cursor)
}

/// `text` cut to `width` columns, with `…` when cut.
fn fit(text: &str, width: usize) -> String {
    if transcript::text_width(text) <= width {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn typed(text: &str, cursor_back: usize) -> Input {
        let mut input = Input::default();
        input.insert_str(text);
        for _ in 0..cursor_back {
            input.left();
        }
        input
    }

    #[test]
    fn the_input_wraps_and_the_cursor_follows() {
        assert_eq!(input_rows(&typed("", 0), 10), (vec![String::new()], (0, 0)));
        assert_eq!(input_rows(&typed("abc\nde", 0), 10), (vec!["abc".into(), "de".into()], (1, 2)));
        assert_eq!(input_rows(&typed("abc\nde", 3), 10).1, (0, 3), "on the newline: end of the first row");
        let (rows, cursor) = input_rows(&typed("abcdefghij", 0), 4);
        assert_eq!(rows, ["abcd", "efgh", "ij"]);
        assert_eq!(cursor, (2, 2));
        // A full row puts the cursor at the start of the next.
        assert_eq!(input_rows(&typed("abcd", 0), 4), (vec!["abcd".into(), String::new()], (1, 0)));
        assert_eq!(input_rows(&typed("abcdef", 2), 4).1, (1, 0));
    }

    #[test]
    fn names_that_do_not_fit_are_cut_with_an_ellipsis() {
        assert_eq!(fit("bob", 5), "bob");
        assert_eq!(fit("bartholomew", 5), "bart…");
    }

    #[test]
    fn a_fresh_screen_says_what_to_do() {
        let mut terminal = Terminal::new(TestBackend::new(100, 20)).expect("a test terminal");
        let mut app = App::new(None);
        terminal.draw(|frame| draw(frame, &mut app)).expect("drawn");
        let screen: String =
            terminal.backend().buffer().content().iter().map(|cell| cell.symbol().to_owned()).collect();
        assert!(screen.contains("No conversation open"), "{screen}");
        assert!(screen.contains("connecting to merpatid"), "{screen}");
        assert!(screen.contains("Ctrl+C quit"), "{screen}");
        assert_eq!(app.pane.height, 20 - 2 - 2 - 3, "the pane's size is handed back for paging");
    }
}
