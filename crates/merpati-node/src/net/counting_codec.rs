//! A request-response codec that reports requests it cannot decode.
//!
//! libp2p's request-response behaviour drops a request whose bytes do not decode without any
//! event (no `InboundFailure`, only its own debug line): to a relay, junk sent at its mailbox
//! protocol would be invisible. This wrapper calls a hook for each such request, so the relay
//! counts it in a metric; everything else passes through to the inner codec.

use std::io;
use std::sync::Arc;

use futures::prelude::*;
use libp2p::request_response::Codec;

/// Called once per inbound request that could not be decoded.
pub(crate) type UndecodableHook = Arc<dyn Fn() + Send + Sync>;

/// `inner`, reporting undecodable requests to `hook`.
#[derive(Clone)]
pub(crate) struct Counting<C> {
    inner: C,
    hook: Option<UndecodableHook>,
}

impl<C> Counting<C> {
    pub(crate) fn new(inner: C, hook: Option<UndecodableHook>) -> Self {
        Self { inner, hook }
    }
}

impl<C: Codec + Send> Codec for Counting<C> {
    type Protocol = C::Protocol;
    type Request = C::Request;
    type Response = C::Response;

    fn read_request<T>(
        &mut self,
        protocol: &Self::Protocol,
        io: &mut T,
    ) -> impl Future<Output = io::Result<Self::Request>> + Send
    where
        T: AsyncRead + Unpin + Send,
    {
        let hook = self.hook.clone();
        let read = self.inner.read_request(protocol, io);
        async move {
            let request = read.await;
            if let (Err(error), Some(hook)) = (&request, hook)
                && is_undecodable(error)
            {
                tracing::debug!(%error, "an undecodable request");
                hook();
            }
            request
        }
    }

    fn read_response<T>(
        &mut self,
        protocol: &Self::Protocol,
        io: &mut T,
    ) -> impl Future<Output = io::Result<Self::Response>> + Send
    where
        T: AsyncRead + Unpin + Send,
    {
        self.inner.read_response(protocol, io)
    }

    fn write_request<T>(
        &mut self,
        protocol: &Self::Protocol,
        io: &mut T,
        request: Self::Request,
    ) -> impl Future<Output = io::Result<()>> + Send
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.inner.write_request(protocol, io, request)
    }

    fn write_response<T>(
        &mut self,
        protocol: &Self::Protocol,
        io: &mut T,
        response: Self::Response,
    ) -> impl Future<Output = io::Result<()>> + Send
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.inner.write_response(protocol, io, response)
    }
}

/// Whether a read failed on the bytes rather than on the connection: not CBOR or not the
/// protocol's shape (libp2p's CBOR codec reports those with these kinds). A request cut off, by
/// the size limit or by a connection that broke, ends in `UnexpectedEof` either way and is not
/// counted: the two cannot be told apart here.
fn is_undecodable(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::InvalidData | io::ErrorKind::Unsupported | io::ErrorKind::Other)
}
