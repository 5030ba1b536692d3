//! The chat's input line: a small multi-line text editor with a cursor, kept as characters so
//! every move is one step for a person whatever the bytes.

/// The text being typed and where the cursor is in it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Input {
    chars: Vec<char>,
    /// The cursor, as an index into `chars` (0..=len).
    cursor: usize,
}

impl Input {
    /// The text as typed.
    pub(crate) fn text(&self) -> String {
        self.chars.iter().collect()
    }

    /// Whether nothing is typed.
    pub(crate) fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The cursor's index in characters.
    pub(crate) fn cursor(&self) -> usize {
        self.cursor
    }

    /// Empties the input and returns what it held.
    pub(crate) fn take(&mut self) -> String {
        self.cursor = 0;
        std::mem::take(&mut self.chars).into_iter().collect()
    }

    /// Types `c` at the cursor.
    pub(crate) fn insert(&mut self, c: char) {
        self.chars.insert(self.cursor, c);
        self.cursor += 1;
    }

    /// Types `text` at the cursor (a paste): `\r\n` and `\r` become `\n`, a tab four spaces,
    /// and other control characters are left out (they would only show as escapes).
    pub(crate) fn insert_str(&mut self, text: &str) {
        let normalised = text.replace("\r\n", "\n").replace('\r', "\n").replace('\t', "    ");
        for c in normalised.chars().filter(|&c| c == '\n' || !c.is_control()) {
            self.insert(c);
        }
    }

    /// Deletes the character before the cursor.
    pub(crate) fn backspace(&mut self) {
        if self.cursor > 0 {
            self.cursor -= 1;
            self.chars.remove(self.cursor);
        }
    }

    /// Deletes the character under the cursor.
    pub(crate) fn delete(&mut self) {
        if self.cursor < self.chars.len() {
            self.chars.remove(self.cursor);
        }
    }

    /// One character left.
    pub(crate) fn left(&mut self) {
        self.cursor = self.cursor.saturating_sub(1);
    }

    /// One character right.
    pub(crate) fn right(&mut self) {
        self.cursor = (self.cursor + 1).min(self.chars.len());
    }

    /// To the start of the cursor's line.
    pub(crate) fn home(&mut self) {
        self.cursor = self.line_start(self.cursor);
    }

    /// To the end of the cursor's line.
    pub(crate) fn end(&mut self) {
        self.cursor = self.line_end(self.cursor);
    }

    /// To the line above, at the same column or its end; false on the first line (the caller
    /// may use the key for something else).
    pub(crate) fn up(&mut self) -> bool {
        let start = self.line_start(self.cursor);
        if start == 0 {
            return false;
        }
        let column = self.cursor - start;
        let above = self.line_start(start - 1);
        self.cursor = (above + column).min(start - 1);
        true
    }

    /// To the line below, at the same column or its end; false on the last line.
    pub(crate) fn down(&mut self) -> bool {
        let end = self.line_end(self.cursor);
        if end == self.chars.len() {
            return false;
        }
        let column = self.cursor - self.line_start(self.cursor);
        let below = end + 1;
        self.cursor = (below + column).min(self.line_end(below));
        true
    }

    fn line_start(&self, at: usize) -> usize {
        self.chars[..at].iter().rposition(|&c| c == '\n').map_or(0, |i| i + 1)
    }

    fn line_end(&self, at: usize) -> usize {
        self.chars[at..].iter().position(|&c| c == '\n').map_or(self.chars.len(), |i| at + i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(text: &str) -> Input {
        let mut input = Input::default();
        input.insert_str(text);
        input
    }

    #[test]
    fn typing_editing_and_taking() {
        let mut input = typed("helo");
        input.left();
        input.insert('l');
        assert_eq!(input.text(), "hello");
        input.end();
        input.backspace();
        input.home();
        input.delete();
        assert_eq!(input.text(), "ell");
        assert_eq!(input.take(), "ell");
        assert!(input.is_empty());
        assert_eq!(input.cursor(), 0);
        // Nothing to delete is no error.
        input.backspace();
        input.delete();
        input.left();
        input.right();
        assert!(input.is_empty());
    }

    #[test]
    fn pasted_line_ends_become_newlines() {
        assert_eq!(typed("a\r\nb\rc\n").text(), "a\nb\nc\n");
        assert_eq!(typed("a\tb\u{1b}[2J").text(), "a    b[2J");
    }

    #[test]
    fn moving_between_lines_keeps_the_column() {
        let mut input = typed("first line\nab\nthird line");
        assert!(input.up());
        assert_eq!(input.cursor(), "first line\nab".len());
        assert!(input.up());
        assert_eq!(input.cursor(), 2, "the column is kept where the line is long enough");
        assert!(!input.up(), "no line above the first");
        assert!(input.down());
        assert_eq!(input.cursor(), "first line\nab".len());
        assert!(input.down());
        assert_eq!(input.cursor(), "first line\nab\nth".len());
        assert!(!input.down(), "no line below the last");
        input.home();
        assert_eq!(input.cursor(), "first line\nab\n".len());
    }

    #[test]
    fn characters_not_bytes() {
        let mut input = typed("héllo ✓");
        input.backspace();
        for _ in 0..4 {
            input.left();
        }
        input.backspace();
        assert_eq!(input.text(), "hllo ");
    }
}
