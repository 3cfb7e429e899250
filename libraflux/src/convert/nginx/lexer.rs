//! nginx's lexical rules, as its configuration reader applies them (and as the real `nginx -t`
//! was seen to accept and refuse them):
//!
//! - Space, tab, CR and LF separate words; `;` ends a directive, `{` opens a block, `}` closes one.
//! - `#` starts a comment to the end of the line, but only where a word could start: `a#b` is one
//!   word.
//! - A word in `"..."` or `'...'` may hold any of those characters. After its closing quote must
//!   come a space, `;`, `{` or `)`: `"a"b` is an error. A quote inside a bare word is an ordinary
//!   character: `a"b"` is one word.
//! - `}` inside a bare word is an ordinary character (`a}b`), and so is `{` right after an
//!   unescaped `$` (`${name}`, a variable).
//! - A backslash takes the next character literally (also in quotes). When a word is stored,
//!   `\"`, `\'` and `\\` become the character, `\t`, `\r`, `\n` the control character, and any
//!   other backslash stays, with what follows it.
//!
//! The body of an OpenResty `*_by_lua_block { ... }` is Lua, which OpenResty reads with Lua's
//! rules (strings, long brackets, `--` comments); it is skipped that way and yields an empty block.
//!
//! Positions are 1-based lines and columns; a column counts UTF-8 characters (nginx reads bytes:
//! any byte but a UTF-8 continuation byte counts one).

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// A word: a directive's name or one of its arguments, with escapes resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    /// Written in quotes.
    pub quoted: bool,
    /// Where it starts (its opening quote, when quoted).
    pub at: Pos,
    /// Just past its last character.
    pub end: Pos,
    /// The first word on its line.
    pub starts_line: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    Word(Word),
    Semicolon(Pos),
    Open(Pos),
    Close(Pos),
}

/// A lexical error: where, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LexError {
    pub at: Pos,
    pub message: String,
}

/// The tokens of `text`, and the position just past its end.
pub fn tokenize(text: &[u8]) -> Result<(Vec<Token>, Pos), LexError> {
    let mut cursor = Cursor { bytes: text, index: 0, pos: Pos { line: 1, col: 1 } };
    let mut tokens = Vec::new();
    let mut starts_line = true;
    loop {
        starts_line |= cursor.skip_blanks_and_comments();
        let at = cursor.pos;
        let Some(byte) = cursor.peek() else { break };
        let token = match byte {
            b';' => {
                cursor.bump();
                Token::Semicolon(at)
            }
            b'{' => {
                cursor.bump();
                if matches!(tokens.last(), Some(Token::Word(word)) if word.text.ends_with("_by_lua_block")) {
                    cursor.lua_block(at)?;
                    tokens.push(Token::Open(at));
                    Token::Close(cursor.pos)
                } else {
                    Token::Open(at)
                }
            }
            b'}' => {
                cursor.bump();
                Token::Close(at)
            }
            b'"' | b'\'' => Token::Word(cursor.quoted(byte, starts_line)?),
            _ => Token::Word(cursor.bare(starts_line)),
        };
        tokens.push(token);
        starts_line = false;
    }
    Ok((tokens, cursor.pos))
}

fn is_blank(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

struct Cursor<'t> {
    bytes: &'t [u8],
    index: usize,
    pos: Pos,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.index).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.index += 1;
        if byte == b'\n' {
            self.pos = Pos { line: self.pos.line + 1, col: 1 };
        } else if !is_utf8_continuation(byte) {
            self.pos.col += 1;
        }
        Some(byte)
    }

    /// Skips spaces and comments; true when a line ended on the way.
    fn skip_blanks_and_comments(&mut self) -> bool {
        let mut newline = false;
        while let Some(byte) = self.peek() {
            match byte {
                b'#' => {
                    while self.peek().is_some_and(|byte| byte != b'\n') {
                        self.bump();
                    }
                }
                _ if is_blank(byte) => {
                    newline |= byte == b'\n';
                    self.bump();
                }
                _ => break,
            }
        }
        newline
    }

    /// Skips a Lua block's body up to its closing brace; the cursor is past the opening one.
    fn lua_block(&mut self, at: Pos) -> Result<(), LexError> {
        let mut depth = 1;
        let unclosed = || LexError {
            at,
            message: "unexpected end of file: the Lua block opened here is never closed".to_owned(),
        };
        while depth > 0 {
            match self.bump().ok_or_else(unclosed)? {
                b'{' => depth += 1,
                b'}' => depth -= 1,
                quote @ (b'"' | b'\'') => loop {
                    match self.bump().ok_or_else(unclosed)? {
                        b'\\' => {
                            self.bump();
                        }
                        byte if byte == quote => break,
                        _ => {}
                    }
                },
                b'[' if matches!(self.peek(), Some(b'[' | b'=')) => {
                    self.lua_long_bracket().ok_or_else(unclosed)?
                }
                b'-' if self.peek() == Some(b'-') => {
                    self.bump();
                    if self.peek() == Some(b'[') {
                        self.bump();
                        if matches!(self.peek(), Some(b'[' | b'=')) {
                            self.lua_long_bracket().ok_or_else(unclosed)?;
                            continue;
                        }
                    }
                    while self.peek().is_some_and(|byte| byte != b'\n') {
                        self.bump();
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Skips a Lua long string or comment (`[[...]]`, `[==[...]==]`); the cursor is past its
    /// first `[`. `None` at the end of the file.
    fn lua_long_bracket(&mut self) -> Option<()> {
        let mut level = 0;
        while self.peek() == Some(b'=') {
            self.bump();
            level += 1;
        }
        if self.bump()? != b'[' {
            return Some(());
        }
        loop {
            if self.bump()? != b']' {
                continue;
            }
            let mut closing = 0;
            while self.peek() == Some(b'=') {
                self.bump();
                closing += 1;
            }
            if closing == level && self.peek() == Some(b']') {
                self.bump();
                return Some(());
            }
        }
    }

    /// A word in quotes; the cursor is on the opening quote.
    fn quoted(&mut self, quote: u8, starts_line: bool) -> Result<Word, LexError> {
        let at = self.pos;
        self.bump();
        let mut raw = Vec::new();
        loop {
            match self.bump() {
                None => {
                    let message = format!(
                        "unexpected end of file: the {} opened here is never closed",
                        if quote == b'"' { "double quote" } else { "single quote" }
                    );
                    return Err(LexError { at, message });
                }
                Some(b'\\') => {
                    raw.push(b'\\');
                    raw.extend(self.bump());
                }
                Some(byte) if byte == quote => break,
                Some(byte) => raw.push(byte),
            }
        }
        let end = self.pos;
        match self.peek() {
            None | Some(b';' | b'{' | b')') => {}
            Some(byte) if is_blank(byte) => {}
            Some(byte) => {
                let message =
                    format!("unexpected {} after a quoted word: put a space between words", describe(byte));
                return Err(LexError { at: self.pos, message });
            }
        }
        Ok(Word { text: unescape(&raw), quoted: true, at, end, starts_line })
    }

    /// A bare word; the cursor is on its first character.
    fn bare(&mut self, starts_line: bool) -> Word {
        let at = self.pos;
        let mut raw = Vec::new();
        let mut after_dollar = false;
        while let Some(byte) = self.peek() {
            match byte {
                b';' => break,
                b'{' if !after_dollar => break,
                _ if is_blank(byte) => break,
                b'\\' => {
                    self.bump();
                    raw.push(b'\\');
                    raw.extend(self.bump());
                    after_dollar = false;
                    continue;
                }
                // `${` keeps `$` in force, as nginx does: `${{` is still one word.
                b'{' => {}
                b'$' => after_dollar = true,
                _ => after_dollar = false,
            }
            raw.push(byte);
            self.bump();
        }
        Word { text: unescape(&raw), quoted: false, at, end: self.pos, starts_line }
    }
}

fn is_utf8_continuation(byte: u8) -> bool {
    (0x80..0xC0).contains(&byte)
}

/// `"x"` for a printable character, its code otherwise.
pub fn describe(byte: u8) -> String {
    if byte.is_ascii_graphic() { format!("\"{}\"", char::from(byte)) } else { format!("byte 0x{byte:02x}") }
}

/// Resolves the escapes nginx resolves when it stores a word.
fn unescape(raw: &[u8]) -> String {
    let mut text = Vec::with_capacity(raw.len());
    let mut index = 0;
    while index < raw.len() {
        let byte = raw[index];
        if byte == b'\\' {
            let replaced = match raw.get(index + 1) {
                Some(&next @ (b'"' | b'\'' | b'\\')) => Some(next),
                Some(b't') => Some(b'\t'),
                Some(b'r') => Some(b'\r'),
                Some(b'n') => Some(b'\n'),
                _ => None,
            };
            if let Some(replaced) = replaced {
                text.push(replaced);
                index += 2;
                continue;
            }
        }
        text.push(byte);
        index += 1;
    }
    String::from_utf8_lossy(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        let (tokens, _) = tokenize(text.as_bytes()).unwrap_or_else(|error| panic!("{error:?}"));
        tokens
            .into_iter()
            .map(|token| match token {
                Token::Word(word) => word.text,
                Token::Semicolon(_) => ";".to_owned(),
                Token::Open(_) => "{".to_owned(),
                Token::Close(_) => "}".to_owned(),
            })
            .collect()
    }

    fn error(text: &str) -> LexError {
        tokenize(text.as_bytes()).expect_err("a lexical error")
    }

    #[test]
    fn punctuation_ends_words_and_comments_start_only_between_words() {
        assert_eq!(words("a b;c{d}e"), ["a", "b", ";", "c", "{", "d}e"]);
        assert_eq!(words("a#b # comment ; {\nc;"), ["a#b", "c", ";"]);
        assert_eq!(words("x ${name}y{ z"), ["x", "${name}y", "{", "z"]);
        assert_eq!(words("x a${b}{"), ["x", "a${b}", "{"]);
    }

    #[test]
    fn quotes_hold_punctuation_and_escapes_resolve_as_nginx_resolves_them() {
        assert_eq!(words(r#"a "b; {c} #d" 'e"f';"#), ["a", "b; {c} #d", "e\"f", ";"]);
        assert_eq!(
            words(r#"a "b\"c" 'd\'e' f\\g h\tx i\qj;"#),
            ["a", "b\"c", "d'e", "f\\g", "h\tx", "i\\qj", ";"]
        );
        assert_eq!(words(r"a b\;c;"), ["a", "b\\;c", ";"]);
        assert_eq!(words(r#"a x"y";"#), ["a", "x\"y\"", ";"]);
        assert_eq!(words(r#"if ("a") {"#), ["if", "(\"a\")", "{"], "a quote inside a bare word is literal");
        assert_eq!(words(r#"f "a") {"#), ["f", "a", ")", "{"], "a quoted word may be followed by )");
    }

    #[test]
    fn a_quoted_word_must_be_followed_by_a_separator() {
        let error = error("a \"b\"c;");
        assert_eq!((error.at.line, error.at.col), (1, 6));
        assert_eq!(error.message, "unexpected \"c\" after a quoted word: put a space between words");
    }

    #[test]
    fn an_unclosed_quote_is_reported_where_it_opens() {
        let error = error("a;\nb 'c;\n}\n");
        assert_eq!((error.at.line, error.at.col), (2, 3));
        assert!(error.message.contains("single quote opened here is never closed"), "{error:?}");
    }

    #[test]
    fn positions_count_lines_and_characters() {
        let (tokens, end) = tokenize("a\n  \"é\" bé c;\n".as_bytes()).unwrap();
        let Token::Word(word) = &tokens[3] else { panic!("{tokens:?}") };
        assert_eq!((word.text.as_str(), word.at, word.starts_line), ("c", Pos { line: 2, col: 10 }, false));
        let Token::Word(word) = &tokens[1] else { panic!("{tokens:?}") };
        assert_eq!(
            (word.at, word.end, word.starts_line),
            (Pos { line: 2, col: 3 }, Pos { line: 2, col: 6 }, true)
        );
        assert_eq!(end, Pos { line: 3, col: 1 });
    }

    #[test]
    fn a_lua_block_is_skipped_with_luas_rules() {
        let text = "a_by_lua_block {\n  if x then s = \"}\" .. '{' .. [==[ }]] ]==] end -- }\n  --[[ { ]] t = {}\n}\nb;";
        assert_eq!(words(text), ["a_by_lua_block", "{", "}", "b", ";"]);
        let error = error("a_by_lua_block { s = \"}\" ");
        assert_eq!(
            (error.at, error.message.as_str()),
            (Pos { line: 1, col: 16 }, "unexpected end of file: the Lua block opened here is never closed")
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_kept_lossily() {
        let (tokens, _) = tokenize(b"a \xff\xfe;").unwrap();
        let Token::Word(word) = &tokens[1] else { panic!("{tokens:?}") };
        assert_eq!(word.text, "\u{fffd}\u{fffd}");
    }
}
