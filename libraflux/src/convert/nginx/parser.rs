//! Tokens of one file to its directives: `name args... ;` or `name args... { directives }`.
//! A block opened in a file must close in it (nginx reads each included file on its own).
//! Errors name the position nginx would and say what was expected.

use std::{path::Path, sync::Arc};

use super::lexer::{self, Pos, Token, Word};
use crate::convert::ConvertError;

/// Deeper nesting than this is refused: real configurations nest four or five blocks, and a
/// bound keeps hostile input from exhausting the stack.
pub const MAX_DEPTH: usize = 64;

/// One directive, and where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    pub file: Arc<Path>,
    pub name: Word,
    pub args: Vec<Word>,
    pub block: Option<Vec<Directive>>,
}

impl Directive {
    pub fn line(&self) -> usize {
        self.name.at.line
    }

    pub fn place(&self) -> crate::convert::Place {
        crate::convert::Place { file: self.file.clone(), line: self.line() }
    }

    /// The first argument's text, or "".
    pub fn first_arg(&self) -> &str {
        self.args.first().map_or("", |word| word.text.as_str())
    }

    /// The directive as written, without its block: `listen 192.0.2.1:53 udp`.
    pub fn text(&self) -> String {
        words_text(std::iter::once(&self.name).chain(&self.args))
    }

    pub fn error_at(&self, at: Pos, message: impl Into<String>) -> ConvertError {
        ConvertError { file: self.file.clone(), position: Some((at.line, at.col)), message: message.into() }
    }
}

fn words_text<'w>(words: impl Iterator<Item = &'w Word>) -> String {
    words.map(|word| word.text.as_str()).collect::<Vec<_>>().join(" ")
}

/// Directives whose name on a new line inside a directive means the `;` before it is missing.
/// None of them is ever an argument of a directive in these contexts.
const DIRECTIVE_NAMES: &[&str] = &[
    "listen",
    "proxy_pass",
    "server",
    "upstream",
    "include",
    "stream",
    "http",
    "events",
    "least_conn",
    "hash",
    "zone",
    "proxy_timeout",
    "proxy_connect_timeout",
    "access_log",
    "error_log",
];

/// Blocks whose directives are nginx directives (not the entries of `map`, `geo` or `types`).
const DIRECTIVE_BLOCKS: &[&str] = &["stream", "upstream", "server", "http", "events", "mail"];

struct Frame {
    opener: Option<(Word, Vec<Word>)>,
    directives: Vec<Directive>,
}

/// The directives of one file.
pub fn parse(file: &Arc<Path>, text: &[u8]) -> Result<Vec<Directive>, ConvertError> {
    let error = |at: Pos, message: String| ConvertError {
        file: file.clone(),
        position: Some((at.line, at.col)),
        message,
    };
    let (tokens, end) = lexer::tokenize(text).map_err(|lex| error(lex.at, lex.message))?;
    let mut stack = vec![Frame { opener: None, directives: Vec::new() }];
    let mut pending: Vec<Word> = Vec::new();
    for token in tokens {
        match token {
            Token::Word(word) => {
                if let Some(message) = missing_semicolon(&stack, &pending, &word) {
                    let last = pending.last().map_or(word.at, |last| last.end);
                    return Err(error(last, message));
                }
                pending.push(word);
            }
            Token::Semicolon(at) => {
                let Some((name, args)) = split(&mut pending) else {
                    return Err(error(at, "unexpected \";\": no directive before it".to_owned()));
                };
                top(&mut stack).push(Directive { file: file.clone(), name, args, block: None });
            }
            Token::Open(at) => {
                let Some((name, args)) = split(&mut pending) else {
                    return Err(error(at, "unexpected \"{\": no directive names this block".to_owned()));
                };
                if stack.len() > MAX_DEPTH {
                    return Err(error(at, format!("blocks nested deeper than {MAX_DEPTH} levels")));
                }
                stack.push(Frame { opener: Some((name, args)), directives: Vec::new() });
            }
            Token::Close(at) => {
                if let Some(first) = pending.first() {
                    let message = format!(
                        "unexpected \"}}\": the directive \"{}\" at line {}, column {} is not ended with \";\"",
                        words_text(pending.iter()),
                        first.at.line,
                        first.at.col
                    );
                    return Err(error(at, message));
                }
                if stack.len() == 1 {
                    return Err(error(at, "unexpected \"}\": no block is open here".to_owned()));
                }
                let Some(Frame { opener: Some((name, args)), directives }) = stack.pop() else {
                    unreachable!("every frame above the file's own has an opener")
                };
                top(&mut stack).push(Directive { file: file.clone(), name, args, block: Some(directives) });
            }
        }
    }
    if let Some(first) = pending.first() {
        let message = format!(
            "unexpected end of file, expecting \";\" or \"}}\": the directive \"{}\" at line {}, column {} is not ended",
            words_text(pending.iter()),
            first.at.line,
            first.at.col
        );
        return Err(error(end, message));
    }
    if let Some(Frame { opener: Some((name, args)), .. }) = stack.last() {
        let message = format!(
            "unexpected end of file, expecting \"}}\": the block \"{}\" opened at line {}, column {} is not closed",
            words_text(std::iter::once(name).chain(args)),
            name.at.line,
            name.at.col
        );
        return Err(error(end, message));
    }
    Ok(stack.pop().map(|frame| frame.directives).unwrap_or_default())
}

fn split(pending: &mut Vec<Word>) -> Option<(Word, Vec<Word>)> {
    if pending.is_empty() {
        return None;
    }
    let mut words = std::mem::take(pending).into_iter();
    let name = words.next()?;
    Some((name, words.collect()))
}

fn top(stack: &mut [Frame]) -> &mut Vec<Directive> {
    &mut stack.last_mut().expect("the file's own frame is never popped").directives
}

/// A directive name at the start of a line while a directive is still open, inside a block of
/// directives: the `;` that should end the open one is missing.
fn missing_semicolon(stack: &[Frame], pending: &[Word], word: &Word) -> Option<String> {
    let first = pending.first()?;
    let in_directives = match stack.last().and_then(|frame| frame.opener.as_ref()) {
        None => true,
        Some((name, _)) => DIRECTIVE_BLOCKS.contains(&name.text.as_str()),
    };
    if !in_directives || word.quoted || !word.starts_line || !DIRECTIVE_NAMES.contains(&word.text.as_str()) {
        return None;
    }
    Some(format!(
        "missing \";\" after \"{}\" (line {}, column {}): the next line starts the directive \"{}\"",
        words_text(pending.iter()),
        first.at.line,
        first.at.col,
        word.text
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Vec<Directive>, String> {
        parse(&Arc::from(Path::new("t.conf")), text.as_bytes()).map_err(|error| error.to_string())
    }

    #[test]
    fn blocks_nest_and_keep_their_positions() {
        let directives = parse_text("events {}\nstream {\n  server { listen 53 udp; proxy_pass dns; }\n}\n")
            .expect("parses");
        assert_eq!(directives.len(), 2);
        let stream = &directives[1];
        assert_eq!(stream.text(), "stream");
        let server = &stream.block.as_ref().unwrap()[0];
        assert_eq!((server.line(), server.name.at.col), (3, 3));
        let inner = server.block.as_ref().unwrap();
        assert_eq!(
            inner.iter().map(Directive::text).collect::<Vec<_>>(),
            ["listen 53 udp", "proxy_pass dns"]
        );
    }

    #[test]
    fn a_directive_may_span_lines() {
        let directives =
            parse_text("upstream u {\n  server 10.0.0.1:53\n         weight=2\n         max_fails=3;\n}\n")
                .unwrap();
        assert_eq!(
            directives[0].block.as_ref().unwrap()[0].text(),
            "server 10.0.0.1:53 weight=2 max_fails=3"
        );
    }

    #[test]
    fn unbalanced_braces_are_errors_naming_the_block() {
        assert_eq!(
            parse_text("stream {\n  server {\n    listen 53;\n  }\n").unwrap_err(),
            "t.conf:5:1: unexpected end of file, expecting \"}\": the block \"stream\" opened at line 1, column 1 is not closed"
        );
        assert_eq!(
            parse_text("stream {\n}\n}\n").unwrap_err(),
            "t.conf:3:1: unexpected \"}\": no block is open here"
        );
        assert_eq!(
            parse_text("{ a; }").unwrap_err(),
            "t.conf:1:1: unexpected \"{\": no directive names this block"
        );
        assert_eq!(parse_text("a; ;").unwrap_err(), "t.conf:1:4: unexpected \";\": no directive before it");
    }

    #[test]
    fn a_missing_semicolon_is_named() {
        assert_eq!(
            parse_text("stream {\n  server {\n    listen 192.0.2.1:53 udp\n    proxy_pass dns;\n  }\n}\n")
                .unwrap_err(),
            "t.conf:3:28: missing \";\" after \"listen 192.0.2.1:53 udp\" (line 3, column 5): the next line starts the directive \"proxy_pass\""
        );
        assert_eq!(
            parse_text("stream {\n  server {\n    proxy_pass dns }\n}\n").unwrap_err(),
            "t.conf:3:20: unexpected \"}\": the directive \"proxy_pass dns\" at line 3, column 5 is not ended with \";\""
        );
        assert_eq!(
            parse_text("events {}\nuser nobody").unwrap_err(),
            "t.conf:2:12: unexpected end of file, expecting \";\" or \"}\": the directive \"user nobody\" at line 2, column 1 is not ended"
        );
    }

    #[test]
    fn map_entries_are_not_mistaken_for_directives() {
        let text = "map $ssl_preread_server_name $name {\n  default\n  upstream;\n}\n";
        assert!(parse_text(text).is_ok());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = "a {".repeat(MAX_DEPTH + 1);
        assert!(parse_text(&text).unwrap_err().contains("nested deeper than 64"));
        let text = format!("{}{}", "a {".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        assert!(parse_text(&text).is_ok());
    }
}
