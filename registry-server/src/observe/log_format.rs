//! The text log's fields, with every control character escaped.
//!
//! Field values can carry what a client sent: a repository name decoded from a `%0a` in the
//! path forged a whole access-log line, and escape sequences reached the operator's terminal.
//! Every control character of a value (C0, DEL, C1) is written as `\u{..}`, so one event is
//! always one line. The JSON format escapes them already.

use std::fmt::{self, Write};

use tracing::field::Field;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::field::delimited::Delimited;
use tracing_subscriber::fmt::format::{FieldFn, Writer, debug_fn};

/// How one field is written.
type FieldWriter = fn(&mut Writer<'_>, &Field, &dyn fmt::Debug) -> fmt::Result;

/// The field formatter of the text log: `name=value` pairs separated by spaces, the message
/// bare, control characters escaped.
pub fn escaped_fields() -> Delimited<&'static str, FieldFn<FieldWriter>> {
    let write: FieldWriter = write_field;
    debug_fn(write).delimited(" ")
}

fn write_field(w: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
    if field.name() != "message" {
        write!(w, "{}=", field.name())?;
    }
    write!(Escaping(w), "{value:?}")
}

/// Passes text on with control characters escaped.
struct Escaping<'a, W>(&'a mut W);

impl<W: Write> Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(char::is_control) {
            self.0.write_str(&rest[..at])?;
            let ch = rest[at..].chars().next().unwrap_or_default();
            write!(self.0, "\\u{{{:x}}}", ch as u32)?;
            rest = &rest[at + ch.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_reach_the_line() {
        let mut out = String::new();
        write!(Escaping(&mut out), "a\nb\r\x1b[31mc\u{85}d é").unwrap();
        assert_eq!(out, "a\\u{a}b\\u{d}\\u{1b}[31mc\\u{85}d é");
    }

    #[test]
    fn a_forged_line_stays_in_its_field() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let written = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(escaped_fields())
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let repository = "team/app\nINFO berth::access: forged status=200";
            tracing::info!(repository = %repository, status = 404, "request");
        });
        let text = String::from_utf8(written.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("repository=team/app\\u{a}INFO"), "{text}");
        assert!(text.contains("status=404"), "{text}");
    }
}
