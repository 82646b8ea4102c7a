//! The contract of segstream's topics.
//!
//! Domain types for the events we read (clicks, orders) and the records we
//! write (segment changes, memberships), the Avro schemas that define them on
//! the wire (`schemas/*.avsc`, embedded here), the Confluent wire format, and
//! the decoders that turn a batch of raw Kafka payloads straight into Arrow
//! record batches. Nothing in this crate talks to Kafka.

mod arrow_batch;
mod avro_fields;
mod binary;
mod change;
mod codec;
mod decision;
mod erasure;
mod error;
mod ids;
mod model;
mod rollout;
pub mod schema;
pub mod wire;

pub use arrow_batch::{
    ClickBatch, ClickRow, DecodedBatch, OrderBatch, OrderRow, RawRecord, Rejected, decode_clicks,
    decode_orders,
};
pub use change::{ChangeType, CustomerSegments, Membership, SegmentChange, SegmentKind, Trigger};
pub use codec::{
    EventTimeRange, InputRules, PayloadFormat, UnknownJsonFields, decode_click, decode_order, encode_click,
    encode_order,
};
pub use decision::{Decision, DecisionAction, DecisionRecord, Lane, Positions};
pub use erasure::ErasureRequest;
pub use error::{DecodeError, EncodeError};
pub use ids::{CustomerId, EventTime};
pub use model::{ClickEvent, ClickEventType, OrderEvent, OrderStatus};
pub use rollout::DefinitionsRollout;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
