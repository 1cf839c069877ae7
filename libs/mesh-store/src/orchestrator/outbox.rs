//! Bus messages committed in the same transaction as the state change that
//! produced them; the relay publishes and then deletes them.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "orch_outbox")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant: String,
    pub subject: String,
    /// `Nats-Msg-Id`: a republish after a crash is dropped by JetStream.
    pub msg_id: String,
    pub payload: Vec<u8>,
    /// W3C trace context of the request that produced the message.
    #[sea_orm(column_type = "Text")]
    pub traceparent: String,
    pub created_at_ms: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
