//! The `roomcast.v1.Roomcast` gRPC service: each method measures the call,
//! hands the request to [`Control`] and maps its error to a status once
//! (see [`crate::error`]).

use std::pin::Pin;

use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use roomcast_api::v1::roomcast_server::Roomcast;
use roomcast_api::v1::{
    ClientEvent, ConnectionEvent, ConsumeEventsRequest, DisconnectSocketsRequest,
    DisconnectSocketsResponse, EmitRequest, EmitResponse, EmitStreamResponse, EmitWithAckRequest,
    EmitWithAckResponse, FetchSocketsRequest, FetchSocketsResponse, GetDeliveryRequest,
    GetDeliveryResponse, GetInboxRequest, GetInboxResponse, GetPresenceRequest,
    GetPresenceResponse, ListRoomsRequest, ListRoomsResponse, PresenceEvent, PurgeInboxRequest,
    PurgeInboxResponse, ReplyRequest, ReplyResponse, RoomsRequest, RoomsResponse,
    WatchConnectionsRequest, WatchPresenceRequest,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::{metrics, Control, ControlError};

/// The response header that says a stream is live: sent once its
/// subscriptions are, so nothing published after the caller sees it is
/// missed.
pub const LIVE_HEADER: &str = "roomcast-stream";

/// A streaming response whose headers say it is live.
fn live<S>(stream: S) -> Response<S> {
    let mut res = Response::new(stream);
    res.metadata_mut().insert(
        LIVE_HEADER,
        tonic::metadata::MetadataValue::from_static("live"),
    );
    res
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ClientEvent, Status>> + Send>>;

/// How many emits of one `EmitStream` are routed ahead of their publication.
const ROUTED_AHEAD: usize = 64;

/// The trailer of a failed `EmitStream`: how many of its events were emitted.
pub const EMITTED_TRAILER: &str = "roomcast-emitted";

#[tonic::async_trait]
impl Roomcast for Control {
    async fn emit(&self, req: Request<EmitRequest>) -> Result<Response<EmitResponse>, Status> {
        metrics::observe("Emit", async move {
            let message_id = self.emit_any(req.into_inner()).await?;
            Ok(Response::new(EmitResponse { message_id }))
        })
        .await
    }

    async fn emit_stream(
        &self,
        req: Request<tonic::Streaming<EmitRequest>>,
    ) -> Result<Response<EmitStreamResponse>, Status> {
        metrics::observe("EmitStream", async move {
            let mut stream = req.into_inner();
            let mut emitted = 0u64;
            let failed = |status: Status, emitted: u64| {
                let mut trailers = tonic::metadata::MetadataMap::new();
                trailers.insert(EMITTED_TRAILER, emitted.into());
                Status::with_metadata(
                    status.code(),
                    format!("message {emitted}: {}", status.message()),
                    trailers,
                )
            };
            // Emits are routed up to ROUTED_AHEAD ahead of their publication
            // and published in the stream's order: the user lookups of
            // consecutive emits then wait for one directory fence together
            // (ADR 0019) instead of one after another.
            let mut routing = FuturesOrdered::new();
            let mut open = true;
            // A broken stream ends the reading; what it brought before is
            // still published, in order, and then the error answered.
            let mut broken = None;
            while open || !routing.is_empty() {
                tokio::select! {
                    biased;
                    Some(routed) = routing.next(), if !routing.is_empty() => {
                        let routed: Result<crate::RoutedEmit, ControlError> = routed;
                        let published = match routed {
                            Ok(routed) => self.publish_routed(routed).await,
                            Err(e) => Err(e),
                        };
                        published.map_err(|e| failed(e.into(), emitted))?;
                        emitted += 1;
                    }
                    next = stream.message(), if open && routing.len() < ROUTED_AHEAD => {
                        match next {
                            Ok(Some(req)) => routing.push_back(self.route_emit(req)),
                            Ok(None) => open = false,
                            Err(status) => {
                                open = false;
                                broken = Some(status);
                            }
                        }
                    }
                }
            }
            if let Some(status) = broken {
                return Err(failed(status, emitted));
            }
            Ok(Response::new(EmitStreamResponse { emitted }))
        })
        .await
    }

    async fn join_rooms(
        &self,
        req: Request<RoomsRequest>,
    ) -> Result<Response<RoomsResponse>, Status> {
        metrics::observe("JoinRooms", async move {
            self.rooms_command(req.into_inner(), true).await?;
            Ok(Response::new(RoomsResponse {}))
        })
        .await
    }

    async fn leave_rooms(
        &self,
        req: Request<RoomsRequest>,
    ) -> Result<Response<RoomsResponse>, Status> {
        metrics::observe("LeaveRooms", async move {
            self.rooms_command(req.into_inner(), false).await?;
            Ok(Response::new(RoomsResponse {}))
        })
        .await
    }

    type ConsumeEventsStream = EventStream;

    async fn consume_events(
        &self,
        req: Request<ConsumeEventsRequest>,
    ) -> Result<Response<Self::ConsumeEventsStream>, Status> {
        metrics::observe("ConsumeEvents", async move {
            let rx = self.consume(req.into_inner()).await?;
            let stream: Self::ConsumeEventsStream =
                Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
            Ok(live(stream))
        })
        .await
    }

    async fn reply(&self, req: Request<ReplyRequest>) -> Result<Response<ReplyResponse>, Status> {
        metrics::observe("Reply", async move {
            Control::reply(self, req.into_inner()).await?;
            Ok(Response::new(ReplyResponse {}))
        })
        .await
    }

    async fn emit_with_ack(
        &self,
        req: Request<EmitWithAckRequest>,
    ) -> Result<Response<EmitWithAckResponse>, Status> {
        metrics::observe("EmitWithAck", async move {
            Ok(Response::new(
                Control::emit_with_ack(self, req.into_inner()).await?,
            ))
        })
        .await
    }

    async fn disconnect_sockets(
        &self,
        req: Request<DisconnectSocketsRequest>,
    ) -> Result<Response<DisconnectSocketsResponse>, Status> {
        metrics::observe("DisconnectSockets", async move {
            let n = self.disconnect(req.into_inner()).await?;
            Ok(Response::new(DisconnectSocketsResponse {
                disconnected: u32::try_from(n).unwrap_or(u32::MAX),
            }))
        })
        .await
    }

    async fn fetch_sockets(
        &self,
        req: Request<FetchSocketsRequest>,
    ) -> Result<Response<FetchSocketsResponse>, Status> {
        metrics::observe("FetchSockets", async move {
            let sockets = self.fetch(req.into_inner()).await?;
            Ok(Response::new(FetchSocketsResponse { sockets }))
        })
        .await
    }

    async fn get_presence(
        &self,
        req: Request<GetPresenceRequest>,
    ) -> Result<Response<GetPresenceResponse>, Status> {
        metrics::observe("GetPresence", async move {
            Ok(Response::new(
                Control::get_presence(self, req.into_inner()).await?,
            ))
        })
        .await
    }

    type WatchPresenceStream = Pin<Box<dyn Stream<Item = Result<PresenceEvent, Status>> + Send>>;

    type WatchConnectionsStream =
        Pin<Box<dyn Stream<Item = Result<ConnectionEvent, Status>> + Send>>;

    async fn watch_connections(
        &self,
        req: Request<WatchConnectionsRequest>,
    ) -> Result<Response<Self::WatchConnectionsStream>, Status> {
        metrics::observe("WatchConnections", async move {
            let rx = Control::watch_connections(self, req.into_inner()).await?;
            let stream: Self::WatchConnectionsStream =
                Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
            Ok(live(stream))
        })
        .await
    }

    async fn watch_presence(
        &self,
        req: Request<WatchPresenceRequest>,
    ) -> Result<Response<Self::WatchPresenceStream>, Status> {
        metrics::observe("WatchPresence", async move {
            let rx = Control::watch_presence(self, req.into_inner()).await?;
            let stream: Self::WatchPresenceStream =
                Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
            Ok(live(stream))
        })
        .await
    }

    async fn get_delivery(
        &self,
        req: Request<GetDeliveryRequest>,
    ) -> Result<Response<GetDeliveryResponse>, Status> {
        metrics::observe("GetDelivery", async move {
            let id = req.into_inner().message_id;
            Ok(Response::new(self.delivery()?.status(&id).await?))
        })
        .await
    }

    async fn get_inbox(
        &self,
        req: Request<GetInboxRequest>,
    ) -> Result<Response<GetInboxResponse>, Status> {
        metrics::observe("GetInbox", async move {
            let r = req.into_inner();
            let entries = self
                .delivery()?
                .inbox(&r.namespace, &r.user_id, &r.socket_id)
                .await?;
            Ok(Response::new(GetInboxResponse { entries }))
        })
        .await
    }

    async fn purge_inbox(
        &self,
        req: Request<PurgeInboxRequest>,
    ) -> Result<Response<PurgeInboxResponse>, Status> {
        metrics::observe("PurgeInbox", async move {
            let r = req.into_inner();
            let purged = self
                .delivery()?
                .purge(&r.namespace, &r.user_id, &r.socket_id)
                .await?;
            Ok(Response::new(PurgeInboxResponse { purged }))
        })
        .await
    }

    async fn list_rooms(
        &self,
        req: Request<ListRoomsRequest>,
    ) -> Result<Response<ListRoomsResponse>, Status> {
        metrics::observe("ListRooms", async move {
            let rooms = Control::list_rooms(self, req.into_inner()).await?;
            Ok(Response::new(ListRoomsResponse { rooms }))
        })
        .await
    }
}
