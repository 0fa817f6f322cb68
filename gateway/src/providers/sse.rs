//! An incremental decoder for server-sent events, the framing of every upstream stream.
//!
//! Bytes arrive in arbitrary pieces (a line, an event or a UTF-8 character can be split across
//! reads); the decoder yields each event once its terminating blank line is in. Memory is bounded:
//! a line or event longer than [`MAX_EVENT_BYTES`] is an error, not a reason to buffer forever.

use std::collections::VecDeque;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

/// No legitimate chat completion event comes near this.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when the server names its events (Anthropic does).
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event is larger than {MAX_EVENT_BYTES} bytes")]
    TooLarge,
    #[error("an event is not valid UTF-8")]
    InvalidUtf8,
}

#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes of the line being received.
    line: Vec<u8>,
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl SseDecoder {
    /// Consumes a piece of the stream, appending each completed event to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut VecDeque<SseEvent>) -> Result<(), SseError> {
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&bytes[..newline]);
            bytes = &bytes[newline + 1..];
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.on_line(&line, out)?;
            line.clear();
            self.line = line;
        }
        self.line.extend_from_slice(bytes);
        if self.line.len() + self.data.len() > MAX_EVENT_BYTES {
            return Err(SseError::TooLarge);
        }
        Ok(())
    }

    /// Called at the end of the stream: an event that lacks only its blank line still counts.
    pub fn finish(&mut self, out: &mut VecDeque<SseEvent>) -> Result<(), SseError> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.on_line(&line, out)?;
        }
        self.dispatch(out);
        Ok(())
    }

    fn on_line(&mut self, line: &[u8], out: &mut VecDeque<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(()); // a comment, often a keep-alive
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::InvalidUtf8)?;
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
                if self.data.len() > MAX_EVENT_BYTES {
                    return Err(SseError::TooLarge);
                }
            }
            "event" => self.event = Some(value.to_owned()),
            _ => {} // id, retry and unknown fields mean nothing to a chat stream
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut VecDeque<SseEvent>) {
        if self.has_data {
            out.push_back(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
            });
        }
        self.event = None;
        self.has_data = false;
    }
}

/// Where an event stream broke.
#[derive(Debug)]
pub enum SseStreamError {
    Transport(reqwest::Error),
    Decode(SseError),
}

pub type SseStream = Pin<Box<dyn Stream<Item = Result<SseEvent, SseStreamError>> + Send>>;

/// Turns a response body into its events.
pub fn events<S>(body: S) -> SseStream
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static,
{
    struct State<S> {
        body: Pin<Box<S>>,
        decoder: SseDecoder,
        ready: VecDeque<SseEvent>,
        ended: bool,
    }
    let state = State {
        body: Box::pin(body),
        decoder: SseDecoder::default(),
        ready: VecDeque::new(),
        ended: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(event) = s.ready.pop_front() {
                return Some((Ok(event), s));
            }
            if s.ended {
                return None;
            }
            let result = match s.body.next().await {
                Some(Ok(bytes)) => s.decoder.feed(&bytes, &mut s.ready),
                Some(Err(e)) => {
                    s.ended = true;
                    return Some((Err(SseStreamError::Transport(e)), s));
                }
                None => {
                    s.ended = true;
                    s.decoder.finish(&mut s.ready)
                }
            };
            if let Err(e) = result {
                s.ended = true;
                s.ready.clear();
                return Some((Err(SseStreamError::Decode(e)), s));
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(input: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::default();
        let mut out = VecDeque::new();
        for chunk in input.chunks(piece) {
            decoder.feed(chunk, &mut out).unwrap();
        }
        decoder.finish(&mut out).unwrap();
        out.into_iter().collect()
    }

    #[test]
    fn events_are_the_same_however_the_bytes_are_split() {
        let input = "event: message_start\r\ndata: {\"a\":\"é\"}\r\n\r\n: keep-alive\n\ndata: one\ndata:two\n\ndata: [DONE]";
        let expected = vec![
            SseEvent {
                event: Some("message_start".into()),
                data: "{\"a\":\"é\"}".into(),
            },
            SseEvent {
                event: None,
                data: "one\ntwo".into(),
            },
            SseEvent {
                event: None,
                data: "[DONE]".into(),
            },
        ];
        for piece in 1..input.len() {
            assert_eq!(
                decode_in_pieces(input.as_bytes(), piece),
                expected,
                "piece {piece}"
            );
        }
    }

    #[test]
    fn an_endless_line_is_an_error_not_a_leak() {
        let mut decoder = SseDecoder::default();
        let mut out = VecDeque::new();
        let chunk = vec![b'x'; 64 * 1024];
        let mut result = Ok(());
        for _ in 0..(MAX_EVENT_BYTES / chunk.len() + 2) {
            result = decoder.feed(&chunk, &mut out);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(SseError::TooLarge));
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let mut decoder = SseDecoder::default();
        let mut out = VecDeque::new();
        assert_eq!(
            decoder.feed(b"data: \xff\xfe\n\n", &mut out),
            Err(SseError::InvalidUtf8)
        );
    }

    /// Random bytes, cut at random places: never a panic, and the events (or the error) do not
    /// depend on where the pieces were cut.
    #[test]
    fn any_bytes_in_any_pieces_decode_the_same() {
        use proptest::prelude::*;
        let sse_like = proptest::collection::vec(
            prop_oneof![
                Just(b"data: ".to_vec()),
                Just(b"event: x\n".to_vec()),
                Just(b"\n".to_vec()),
                Just(b"\r\n".to_vec()),
                Just(b": comment\n".to_vec()),
                Just("é".as_bytes().to_vec()),
                proptest::collection::vec(any::<u8>(), 0..16),
            ],
            0..40,
        )
        .prop_map(|parts| parts.concat());
        let decode = |input: &[u8], cuts: &[usize]| {
            let mut decoder = SseDecoder::default();
            let mut out = VecDeque::new();
            let mut start = 0;
            for &cut in cuts.iter().chain([&input.len()]) {
                let cut = cut.clamp(start, input.len());
                decoder.feed(&input[start..cut], &mut out)?;
                start = cut;
            }
            decoder.finish(&mut out)?;
            Ok::<_, SseError>(out.into_iter().collect::<Vec<_>>())
        };
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 2_000,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        runner
            .run(
                &(sse_like, proptest::collection::vec(0usize..600, 0..8)),
                |(input, mut cuts)| {
                    cuts.sort_unstable();
                    prop_assert_eq!(decode(&input, &cuts), decode(&input, &[]));
                    Ok(())
                },
            )
            .unwrap();
    }
}
