//! What the proxy answers a request with: a head, the node's end-to-end
//! header fields as it sent them, and a body. The gateway's own HTTP/1.1
//! server writes the node's fields from its bytes; hyper gets one
//! `http::Response` ([`Answer::into_response`]).

use std::ops::{Deref, DerefMut};

use http::{Response, StatusCode, Version};

use super::body::ResponseBody;
use crate::upstream::fields::NodeFields;

/// An answer to a client, boxed: it is returned through every phase of
/// the request path, and moving a pointer costs less than copying its ~400
/// bytes at each (callgrind counted 14 such copies a request).
pub struct Answer(Box<AnswerParts>);

/// What an answer holds.
pub struct AnswerParts {
    /// Status, version, and the headers the gateway sets: all of an
    /// answer of its own, or what it adds to a node's (the affinity
    /// cookie), written after the node's fields.
    pub parts: http::response::Parts,
    /// The node's fields (empty for an answer of the gateway's own).
    pub fields: NodeFields,
    pub body: ResponseBody,
}

impl Deref for Answer {
    type Target = AnswerParts;

    fn deref(&self) -> &AnswerParts {
        &self.0
    }
}

impl DerefMut for Answer {
    fn deref_mut(&mut self) -> &mut AnswerParts {
        &mut self.0
    }
}

impl Answer {
    /// A node's answer.
    pub fn from_node(
        status: StatusCode,
        version: Version,
        fields: NodeFields,
        body: ResponseBody,
    ) -> Answer {
        let mut parts = Response::new(()).into_parts().0;
        parts.status = status;
        parts.version = version;
        Answer(Box::new(AnswerParts {
            parts,
            fields,
            body,
        }))
    }

    /// The body, once the head is written.
    pub fn into_body(self) -> ResponseBody {
        self.0.body
    }

    pub fn status(&self) -> StatusCode {
        self.parts.status
    }

    /// The answer as hyper serves it: the node's fields and then the
    /// gateway's in one map.
    pub fn into_response(self) -> Response<ResponseBody> {
        let AnswerParts {
            mut parts,
            fields,
            body,
        } = *self.0;
        if !fields.is_empty() {
            let added = std::mem::take(&mut parts.headers);
            parts.headers = fields.into_header_map(added);
        }
        Response::from_parts(parts, body)
    }
}

/// An answer of the gateway's own.
impl From<Response<ResponseBody>> for Answer {
    fn from(response: Response<ResponseBody>) -> Answer {
        let (parts, body) = response.into_parts();
        Answer(Box::new(AnswerParts {
            parts,
            fields: NodeFields::default(),
            body,
        }))
    }
}
