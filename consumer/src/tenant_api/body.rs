//! Reading an answer with a bound on its size. A tenant (or something pretending to be one)
//! can send any amount; the caller says how much it takes and what to keep of a longer answer,
//! and is told whenever something was left out.

/// What to keep of an answer longer than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Nothing: the call fails with [`super::ApiError::TooLarge`] (JSON cut short is not the
    /// answer).
    Refuse,
    /// The first `limit` bytes; the rest is not read (error bodies, of which only the start is
    /// quoted).
    KeepHead,
    /// The last `limit` bytes (script logs, whose end shows the error).
    KeepTail,
}

/// An answer's body, and whether it was cut to the limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub truncated: bool,
}

pub(super) enum ReadError {
    TooLarge,
    Http(reqwest::Error),
}

/// Reads `response` to its end, or to the limit as `overflow` says.
pub(super) async fn read(
    mut response: reqwest::Response,
    limit: usize,
    overflow: Overflow,
) -> Result<Body, ReadError> {
    let mut body = Bounded::new(limit, overflow);
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Http)? {
        if !body.push(&chunk)? {
            break;
        }
    }
    Ok(body.finish())
}

/// The bookkeeping of [`read`], apart from the network so it can be tested.
struct Bounded {
    limit: usize,
    overflow: Overflow,
    bytes: Vec<u8>,
    truncated: bool,
}

impl Bounded {
    fn new(limit: usize, overflow: Overflow) -> Self {
        Self {
            limit,
            overflow,
            bytes: Vec::new(),
            truncated: false,
        }
    }

    /// Takes the next chunk; false when nothing more is wanted.
    fn push(&mut self, chunk: &[u8]) -> Result<bool, ReadError> {
        if self.bytes.len() + chunk.len() <= self.limit {
            self.bytes.extend_from_slice(chunk);
            return Ok(true);
        }
        match self.overflow {
            Overflow::Refuse => Err(ReadError::TooLarge),
            Overflow::KeepHead => {
                let room = self.limit - self.bytes.len();
                self.bytes.extend_from_slice(&chunk[..room]);
                self.truncated = true;
                Ok(false)
            }
            Overflow::KeepTail => {
                self.bytes.extend_from_slice(chunk);
                self.truncated = true;
                // Trim in batches rather than per chunk, to keep this linear.
                if self.bytes.len() > self.limit * 2 {
                    self.bytes.drain(..self.bytes.len() - self.limit);
                }
                Ok(true)
            }
        }
    }

    fn finish(mut self) -> Body {
        if self.bytes.len() > self.limit {
            self.bytes.drain(..self.bytes.len() - self.limit);
        }
        Body {
            bytes: self.bytes,
            truncated: self.truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(limit: usize, overflow: Overflow, chunks: &[&[u8]]) -> Result<Body, ()> {
        let mut body = Bounded::new(limit, overflow);
        for chunk in chunks {
            match body.push(chunk) {
                Ok(true) => {}
                Ok(false) => break,
                Err(_) => return Err(()),
            }
        }
        Ok(body.finish())
    }

    #[test]
    fn an_answer_within_the_limit_is_whole_and_not_marked() {
        for overflow in [Overflow::Refuse, Overflow::KeepHead, Overflow::KeepTail] {
            let body = feed(6, overflow, &[b"abc", b"def"]).expect("within the limit");
            assert_eq!(body.bytes, b"abcdef");
            assert!(!body.truncated);
        }
    }

    #[test]
    fn a_longer_answer_is_refused_or_cut_and_marked() {
        assert!(feed(5, Overflow::Refuse, &[b"abc", b"def"]).is_err());
        let head = feed(5, Overflow::KeepHead, &[b"abc", b"def", b"ghi"]).expect("head");
        assert_eq!(
            (head.bytes.as_slice(), head.truncated),
            (&b"abcde"[..], true)
        );
        let chunks: Vec<&[u8]> = vec![b"abc"; 10];
        let tail = feed(5, Overflow::KeepTail, &chunks).expect("tail");
        assert_eq!(
            (tail.bytes.as_slice(), tail.truncated),
            (&b"bcabc"[..], true)
        );
    }
}
