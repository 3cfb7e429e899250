//! BIRD's control socket, spoken directly: the line protocol `birdc` speaks. BIRD greets with
//! `0001 BIRD <version> ready.`; each command is one line; each reply line starts with a
//! four-digit code followed by `-` (more lines follow) or a space (the last line), or with a space
//! alone (a continuation of the previous code's text), or with `+` (a spontaneous message).
//! Codes: 0xxx done, 1xxx table rows, 2xxx table headings, 8xxx run-time errors, 9xxx parse
//! errors (BIRD's `doc/reply_codes`).
//!
//! Why not run `birdc configure`: birdc exits 0 whatever BIRD answered, so its output would
//! have to be parsed anyway, and an extra process and binary on the stop path buys nothing.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::UnixStream,
};

/// BIRD's whole answer to one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The code of the last line, which says how the command ended.
    pub code: u16,
    /// Every line's text without its code, in order.
    pub lines: Vec<String>,
}

impl Reply {
    /// The text of the last line: the outcome in BIRD's words.
    pub fn message(&self) -> &str {
        self.lines.last().map_or("", String::as_str)
    }

    /// Run-time (8xxx) or parse-time (9xxx) error.
    pub const fn is_error(&self) -> bool {
        self.code >= 8000
    }
}

/// Codes with which `configure` reports that BIRD took the new configuration: reconfigured,
/// reconfiguration in progress (protocols still restarting), queued behind one in progress.
pub const CONFIGURE_ACCEPTED: [u16; 3] = [3, 4, 5];

/// What went wrong talking to BIRD; each names the socket and the command.
#[derive(Debug, thiserror::Error)]
pub enum BirdError {
    #[error("cannot connect to BIRD's control socket {}: {source}", socket.display())]
    Connect { socket: PathBuf, source: std::io::Error },
    #[error("BIRD `{command}` over {}: {source}", socket.display())]
    Io { socket: PathBuf, command: String, source: std::io::Error },
    #[error("BIRD `{command}` over {}: no answer within {after:?}", socket.display())]
    Timeout { socket: PathBuf, command: String, after: Duration },
    #[error("BIRD `{command}` over {}: unexpected reply line {line:?}", socket.display())]
    Protocol { socket: PathBuf, command: String, line: String },
    #[error("BIRD refused `{command}` over {} ({code:04}): {message}", socket.display())]
    Refused { socket: PathBuf, command: String, code: u16, message: String },
}

impl BirdError {
    /// BIRD answered and said no (as opposed to not being reachable, or not answering).
    pub const fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }
}

/// One line of a reply, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Line<'a> {
    /// `CODE-text`: more follows.
    More(u16, &'a str),
    /// `CODE text`: the last line.
    Last(u16, &'a str),
    /// ` text`: continues the previous code.
    Continued(&'a str),
    /// `+text`: not part of the reply.
    Spontaneous,
}

fn parse_line(line: &str) -> Option<Line<'_>> {
    if let Some(text) = line.strip_prefix(' ') {
        return Some(Line::Continued(text));
    }
    if line.starts_with('+') {
        return Some(Line::Spontaneous);
    }
    let digits = line.get(..4).filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()))?;
    let code = digits.parse().ok()?;
    match line.as_bytes().get(4) {
        Some(b'-') => Some(Line::More(code, &line[5..])),
        Some(b' ') => Some(Line::Last(code, &line[5..])),
        // `0000` alone ends some replies.
        None => Some(Line::Last(code, "")),
        Some(_) => None,
    }
}

/// A connection to BIRD's control socket, past the greeting.
struct Session {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
}

impl Session {
    async fn open(socket: &Path) -> Result<Self, BirdError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| BirdError::Connect { socket: socket.to_owned(), source })?;
        let mut session = Self { socket: socket.to_owned(), reader: BufReader::new(stream) };
        let greeting = session.reply("(greeting)").await?;
        if greeting.code != 1 {
            return Err(session.refused("(greeting)", &greeting));
        }
        Ok(session)
    }

    async fn send(&mut self, command: &str) -> Result<Reply, BirdError> {
        let line = format!("{command}\n");
        self.reader.get_mut().write_all(line.as_bytes()).await.map_err(|source| self.io(command, source))?;
        self.reply(command).await
    }

    /// Reads lines up to the last one of a reply.
    async fn reply(&mut self, command: &str) -> Result<Reply, BirdError> {
        let mut lines = Vec::new();
        loop {
            let mut raw = String::new();
            let read = self.reader.read_line(&mut raw).await.map_err(|source| self.io(command, source))?;
            if read == 0 {
                let closed = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                return Err(self.io(command, closed));
            }
            let text = raw.trim_end_matches(['\n', '\r']);
            let protocol = || BirdError::Protocol {
                socket: self.socket.clone(),
                command: command.to_owned(),
                line: text.to_owned(),
            };
            match parse_line(text).ok_or_else(protocol)? {
                Line::More(_, text) | Line::Continued(text) => lines.push(text.to_owned()),
                Line::Spontaneous => {}
                Line::Last(code, text) => {
                    lines.push(text.to_owned());
                    return Ok(Reply { code, lines });
                }
            }
        }
    }

    fn io(&self, command: &str, source: std::io::Error) -> BirdError {
        BirdError::Io { socket: self.socket.clone(), command: command.to_owned(), source }
    }

    fn refused(&self, command: &str, reply: &Reply) -> BirdError {
        BirdError::Refused {
            socket: self.socket.clone(),
            command: command.to_owned(),
            code: reply.code,
            message: reply.message().to_owned(),
        }
    }
}

/// Sends `command` over `socket` and returns BIRD's reply, whatever its code; all of it within
/// `timeout`.
pub async fn command(socket: &Path, command: &str, timeout: Duration) -> Result<Reply, BirdError> {
    let exchange = async {
        let mut session = Session::open(socket).await?;
        session.send(command).await
    };
    tokio::time::timeout(timeout, exchange).await.unwrap_or_else(|_| {
        Err(BirdError::Timeout { socket: socket.to_owned(), command: command.to_owned(), after: timeout })
    })
}

/// `configure`: BIRD reads its configuration files again and applies the difference. Any code
/// but those in [`CONFIGURE_ACCEPTED`] is a refusal (BIRD then runs the configuration it had).
pub async fn configure(socket: &Path, timeout: Duration) -> Result<Reply, BirdError> {
    let reply = command(socket, "configure", timeout).await?;
    if CONFIGURE_ACCEPTED.contains(&reply.code) {
        Ok(reply)
    } else {
        Err(BirdError::Refused {
            socket: socket.to_owned(),
            command: "configure".to_owned(),
            code: reply.code,
            message: reply.message().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    #[test]
    fn reply_lines_parse_by_their_fourth_and_fifth_byte() {
        assert_eq!(parse_line("0001 BIRD 2.0.12 ready."), Some(Line::Last(1, "BIRD 2.0.12 ready.")));
        assert_eq!(
            parse_line("0002-Reading configuration from /etc/bird/bird.conf"),
            Some(Line::More(2, "Reading configuration from /etc/bird/bird.conf"))
        );
        assert_eq!(parse_line(" 192.0.2.10/32 blackhole"), Some(Line::Continued("192.0.2.10/32 blackhole")));
        assert_eq!(parse_line("0000"), Some(Line::Last(0, "")));
        assert_eq!(parse_line("+spontaneous"), Some(Line::Spontaneous));
        for bad in ["", "Reconfigured", "003 x", "00a3 x", "0003:x"] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
    }

    /// A stand-in speaking BIRD's framing on a socket, to check how replies are read; what
    /// BIRD itself answers is checked against the real BIRD in the VM test (tests/tests/vm/fleet.rs).
    fn serve(answers: &'static [&'static str]) -> (super::super::tests::Scratch, PathBuf) {
        let dir = super::super::tests::Scratch::new("bird");
        let path = dir.path().join("bird.ctl");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            use std::io::{BufRead as _, Write as _};
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(b"0001 BIRD 2.0.12 ready.\n").unwrap();
            let mut line = String::new();
            std::io::BufReader::new(stream.try_clone().unwrap()).read_line(&mut line).unwrap();
            assert_eq!(line, "configure\n");
            for answer in answers {
                stream.write_all(answer.as_bytes()).unwrap();
            }
        });
        (dir, path)
    }

    #[tokio::test]
    async fn configure_takes_the_codes_of_success_and_refuses_the_rest() {
        let (_dir, path) =
            serve(&["0002-Reading configuration from /etc/bird/bird.conf\n", "0003 Reconfigured\n"]);
        let reply = configure(&path, Duration::from_secs(5)).await.unwrap();
        assert_eq!((reply.code, reply.message()), (3, "Reconfigured"));

        let (_dir, path) = serve(&[
            "0002-Reading configuration from /etc/bird/bird.conf\n",
            "8002 /etc/bird/bird.conf:8:1 syntax error, unexpected GARBAGE\n",
        ]);
        let err = configure(&path, Duration::from_secs(5)).await.unwrap_err();
        assert!(err.is_refusal());
        assert_eq!(
            err.to_string(),
            format!(
                "BIRD refused `configure` over {} (8002): /etc/bird/bird.conf:8:1 syntax error, unexpected GARBAGE",
                path.display()
            )
        );

        let (_dir, path) = serve(&["0002-Reading configuration\n"]);
        let err = configure(&path, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(err, BirdError::Io { .. }), "the socket closed mid-reply: {err}");
    }

    #[tokio::test]
    async fn no_socket_and_no_answer_are_errors_naming_the_socket() {
        let dir = super::super::tests::Scratch::new("bird-missing");
        let missing = dir.path().join("missing.ctl");
        let err = configure(&missing, Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, BirdError::Connect { .. }) && !err.is_refusal(), "{err}");
        assert!(err.to_string().contains("missing.ctl"), "{err}");

        let silent = dir.path().join("silent.ctl");
        let _listener = UnixListener::bind(&silent).unwrap();
        let err = configure(&silent, Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(err, BirdError::Timeout { .. }), "{err}");
    }
}
