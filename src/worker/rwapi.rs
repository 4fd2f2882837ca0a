//! The Remote Workers API (`google.devtools.remoteworkers.v1test2`, `bots.proto` and
//! `worker.proto`), by hand: no crate ships it. Only the messages a bot sends and reads, with
//! the field numbers of the protos as BuildGrid 0.4.4 serves them, declared in the order of
//! their numbers (prost encodes in declaration order; protoc's encoders in number order, and
//! the bytes then match). `Lease`'s deprecated `assignment` (1) and `inline_assignment` (6)
//! are left out. `google.protobuf.Any`,
//! `Timestamp` and `google.rpc.Status` come from `bazel-remote-apis` through
//! [`crate::cache::remote::reapi`], as does `google.rpc.PreconditionFailure` (the client reads it
//! too); `google.protobuf.FieldMask` is here, for the same reason as the rest.

use crate::cache::remote::reapi::{Any, RpcStatus, Timestamp};

/// `rpc CreateBotSession(CreateBotSessionRequest) returns (BotSession)`.
pub const CREATE_BOT_SESSION: &str = "/google.devtools.remoteworkers.v1test2.Bots/CreateBotSession";
/// `rpc UpdateBotSession(UpdateBotSessionRequest) returns (BotSession)`.
pub const UPDATE_BOT_SESSION: &str = "/google.devtools.remoteworkers.v1test2.Bots/UpdateBotSession";

/// `Lease.payload` as BuildGrid and other REAPI engines send it: the whole `Action`, inline.
pub const ACTION_TYPE: &str = "type.googleapis.com/build.bazel.remote.execution.v2.Action";
/// `Lease.result`: the `ActionResult`, which the engine wraps in its `ExecuteResponse`.
pub const ACTION_RESULT_TYPE: &str = "type.googleapis.com/build.bazel.remote.execution.v2.ActionResult";

/// `enum BotStatus` (bots.proto).
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum BotStatus {
    Unspecified = 0,
    /// The bot is healthy and may be given leases; only bots in this state are.
    Ok = 1,
    Unhealthy = 2,
    HostRebooting = 3,
    /// The bot is going away: it is given nothing more.
    BotTerminating = 4,
}

/// `enum LeaseState` (bots.proto; there is no 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum LeaseState {
    Unspecified = 0,
    Pending = 1,
    Active = 2,
    Completed = 4,
    Cancelled = 5,
}

/// `message BotSession` (bots.proto): the bot's whole state, sent in full on every update.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BotSession {
    /// Set by the server at creation (`{parent}/{uuid}` on BuildGrid); echoed afterwards.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The bot's stable identity, chosen by the bot.
    #[prost(string, tag = "2")]
    pub bot_id: String,
    #[prost(enumeration = "BotStatus", tag = "3")]
    pub status: i32,
    #[prost(message, optional, tag = "4")]
    pub worker: Option<Worker>,
    #[prost(message, repeated, tag = "5")]
    pub leases: Vec<Lease>,
    /// When the server will consider the bot dead unless it hears from it.
    #[prost(message, optional, tag = "6")]
    pub expire_time: Option<Timestamp>,
    /// The server's counter of lease changes; echoed back as received.
    #[prost(string, tag = "7")]
    pub version: String,
}

/// `message Lease` (bots.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Lease {
    #[prost(enumeration = "LeaseState", tag = "2")]
    pub state: i32,
    #[prost(message, optional, tag = "3")]
    pub status: Option<RpcStatus>,
    #[prost(message, optional, tag = "4")]
    pub requirements: Option<Worker>,
    #[prost(message, optional, tag = "5")]
    pub expire_time: Option<Timestamp>,
    #[prost(string, tag = "7")]
    pub id: String,
    #[prost(message, optional, tag = "8")]
    pub payload: Option<Any>,
    #[prost(message, optional, tag = "9")]
    pub result: Option<Any>,
}

/// `message Worker` (worker.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Worker {
    /// The first device is the one an engine matches actions' platforms against.
    #[prost(message, repeated, tag = "1")]
    pub devices: Vec<Device>,
    #[prost(message, repeated, tag = "2")]
    pub properties: Vec<Property>,
    /// `capacity`: how many leases at once.
    #[prost(message, repeated, tag = "3")]
    pub configs: Vec<Property>,
}

/// `message Device` (worker.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Device {
    #[prost(string, tag = "1")]
    pub handle: String,
    #[prost(message, repeated, tag = "2")]
    pub properties: Vec<Property>,
}

/// `Worker.Property`, `Worker.Config` and `Device.Property`: the same two fields.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Property {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `message CreateBotSessionRequest` (bots.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateBotSessionRequest {
    /// The instance name.
    #[prost(string, tag = "1")]
    pub parent: String,
    #[prost(message, optional, tag = "2")]
    pub bot_session: Option<BotSession>,
}

/// `message UpdateBotSessionRequest` (bots.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateBotSessionRequest {
    /// The session's name, as the server gave it.
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub bot_session: Option<BotSession>,
    #[prost(message, optional, tag = "3")]
    pub update_mask: Option<FieldMask>,
}

/// `google.protobuf.FieldMask`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FieldMask {
    #[prost(string, repeated, tag = "1")]
    pub paths: Vec<String>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use prost::Message;

    /// The field numbers are the protocol: pin the bytes of a small session, as BuildGrid's
    /// Python stubs encode the same message.
    #[test]
    fn a_bot_session_encodes_with_the_protocols_field_numbers() {
        let s = BotSession {
            name: "n".into(),
            bot_id: "b".into(),
            status: BotStatus::Ok as i32,
            leases: vec![Lease { id: "l".into(), state: LeaseState::Completed as i32, ..Default::default() }],
            version: "3".into(),
            ..Default::default()
        };
        // name=1 "n", bot_id=2 "b", status=3 1, leases=5 {state=2 4, id=7 "l"}, version=7 "3".
        assert_eq!(
            s.encode_to_vec(),
            [0x0a, 1, b'n', 0x12, 1, b'b', 0x18, 1, 0x2a, 5, 0x10, 4, 0x3a, 1, b'l', 0x3a, 1, b'3']
        );
        assert_eq!(BotSession::decode(&s.encode_to_vec()[..]).unwrap(), s);
    }
}
