//! What a client asks of the routing in its headers, read once per request.

use axum::http::HeaderMap;
use switchboard_policies::spec::ForcedRoute;

use crate::error::ApiError;

/// The longest conversation name taken from the header.
const MAX_CONVERSATION_NAME_BYTES: usize = 256;

/// The client's routing headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHints {
    /// `x-switchboard-route: local|remote` (`auto`, or no header: the policy decides).
    pub forced: Option<ForcedRoute>,
    /// `x-switchboard-conversation`: the client's name for the conversation, which keeps an
    /// escalated thread on its tier.
    pub conversation: Option<Vec<u8>>,
}

impl ClientHints {
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let forced = match headers.get("x-switchboard-route").map(|v| v.to_str()) {
            None => None,
            Some(value) => match value.map(str::trim) {
                Ok("local") => Some(ForcedRoute::Local),
                Ok("remote") => Some(ForcedRoute::Remote),
                Ok("auto") => None,
                _ => {
                    return Err(ApiError::bad_request(
                        "The x-switchboard-route header must be local, remote or auto.",
                        None,
                    ));
                }
            },
        };
        let conversation = headers
            .get("x-switchboard-conversation")
            .map(|v| v.as_bytes())
            .filter(|v| !v.is_empty() && v.len() <= MAX_CONVERSATION_NAME_BYTES)
            .map(<[u8]>::to_vec);
        Ok(Self {
            forced,
            conversation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hints(pairs: &[(&'static str, &str)]) -> Result<ClientHints, ApiError> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, value.parse().unwrap());
        }
        ClientHints::from_headers(&headers)
    }

    #[test]
    fn routes_and_conversation_names_are_read_and_bad_ones_refused() {
        assert_eq!(hints(&[]).unwrap(), ClientHints::default());
        let forced = |v| hints(&[("x-switchboard-route", v)]).map(|h| h.forced);
        assert_eq!(forced(" local ").unwrap(), Some(ForcedRoute::Local));
        assert_eq!(forced("remote").unwrap(), Some(ForcedRoute::Remote));
        assert_eq!(forced("auto").unwrap(), None);
        assert!(forced("cloud").is_err());
        let named = |v: &str| hints(&[("x-switchboard-conversation", v)]).unwrap();
        assert_eq!(named("t-1").conversation.as_deref(), Some(&b"t-1"[..]));
        assert_eq!(named(&"x".repeat(300)).conversation, None);
    }
}
