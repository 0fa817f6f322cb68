//! What a client asks of the routing in its headers, read once per request.

use axum::http::HeaderMap;
use switchboard_policies::spec::ForcedRoute;

use crate::error::ApiError;
use crate::providers::local::{POOL_HOP_HEADER, Reach};

/// The longest conversation name taken from the header.
const MAX_CONVERSATION_NAME_BYTES: usize = 256;

/// The client's routing headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHints {
    /// `x-switchboard-route`, read; `Err` for a value that is none of local, remote, auto.
    forced: Result<Option<ForcedRoute>, BadRouteHeader>,
    /// `x-switchboard-conversation`: the client's name for the conversation, which keeps an
    /// escalated thread on its tier.
    pub conversation: Option<Vec<u8>>,
    /// Which members of a local pool may answer: the engine only for a request another node's
    /// pool sent here ([`POOL_HOP_HEADER`]).
    pub local_reach: Reach,
}

/// An `x-switchboard-route` header that is none of local, remote, auto.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BadRouteHeader;

impl ClientHints {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let forced = match headers.get("x-switchboard-route").map(|v| v.to_str()) {
            None => Ok(None),
            Some(value) => match value.map(str::trim) {
                Ok("local") => Ok(Some(ForcedRoute::Local)),
                Ok("remote") => Ok(Some(ForcedRoute::Remote)),
                Ok("auto") => Ok(None),
                _ => Err(BadRouteHeader),
            },
        };
        let conversation = headers
            .get("x-switchboard-conversation")
            .map(|v| v.as_bytes())
            .filter(|v| !v.is_empty() && v.len() <= MAX_CONVERSATION_NAME_BYTES)
            .map(<[u8]>::to_vec);
        let local_reach = if headers.contains_key(POOL_HOP_HEADER) {
            Reach::InProcess
        } else {
            Reach::Pool
        };
        Self {
            forced,
            conversation,
            local_reach,
        }
    }

    /// The route the client forces (`auto`, or no header: none). A bad value is the client's
    /// error, raised only where the policy routes: without a `routing:` section the header
    /// means nothing and is ignored.
    pub fn forced(&self) -> Result<Option<ForcedRoute>, ApiError> {
        self.forced.map_err(|BadRouteHeader| {
            ApiError::bad_request(
                "The x-switchboard-route header must be local, remote or auto.",
                None,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hints(pairs: &[(&'static str, &str)]) -> ClientHints {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, value.parse().unwrap());
        }
        ClientHints::from_headers(&headers)
    }

    #[test]
    fn routes_and_conversation_names_are_read_and_bad_ones_refused() {
        let none = hints(&[]);
        assert_eq!((none.forced().unwrap(), none.conversation), (None, None));
        let forced = |v| hints(&[("x-switchboard-route", v)]).forced();
        assert_eq!(forced(" local ").unwrap(), Some(ForcedRoute::Local));
        assert_eq!(forced("remote").unwrap(), Some(ForcedRoute::Remote));
        assert_eq!(forced("auto").unwrap(), None);
        assert!(forced("cloud").is_err());
        let named = |v: &str| hints(&[("x-switchboard-conversation", v)]);
        assert_eq!(named("t-1").conversation.as_deref(), Some(&b"t-1"[..]));
        assert_eq!(named(&"x".repeat(300)).conversation, None);
        assert_eq!(none.local_reach, Reach::Pool);
        let hop = hints(&[(POOL_HOP_HEADER, "1")]);
        assert_eq!(hop.local_reach, Reach::InProcess);
    }
}
