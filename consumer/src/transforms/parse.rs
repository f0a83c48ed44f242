//! Parse: an MQTT payload into the normalized envelope (legacy, hybrid or CloudEvents 1.0).

use qlik_events::{Envelope, EnvelopeError};

/// Parses a message. The error names what is wrong, never echoes the payload.
pub fn parse(payload: &[u8]) -> Result<Envelope, EnvelopeError> {
    Envelope::parse(payload)
}
