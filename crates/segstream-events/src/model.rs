use serde::{Deserialize, Serialize};

use crate::ids::{CustomerId, EventTime};

/// What a customer did in a clickstream event (`schemas/clickstream.avsc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClickEventType {
    /// Any page.
    PageView,
    /// A product detail page.
    ProductView,
    /// A search.
    Search,
    /// A product put in the cart.
    AddToCart,
    /// A product taken out of the cart.
    RemoveFromCart,
    /// The checkout was started.
    CheckoutStart,
}

impl ClickEventType {
    /// All symbols, in schema order.
    pub const ALL: [ClickEventType; 6] = [
        Self::PageView,
        Self::ProductView,
        Self::Search,
        Self::AddToCart,
        Self::RemoveFromCart,
        Self::CheckoutStart,
    ];

    /// The Avro / JSON symbol.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PageView => "page_view",
            Self::ProductView => "product_view",
            Self::Search => "search",
            Self::AddToCart => "add_to_cart",
            Self::RemoveFromCart => "remove_from_cart",
            Self::CheckoutStart => "checkout_start",
        }
    }

    /// Parses a symbol.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Status an order event reports (`schemas/orders.avsc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// The order was placed: it counts.
    Placed,
    /// The order was cancelled: it no longer counts.
    Cancelled,
    /// The order was refunded: it no longer counts.
    Refunded,
}

impl OrderStatus {
    /// All symbols, in schema order.
    pub const ALL: [OrderStatus; 3] = [Self::Placed, Self::Cancelled, Self::Refunded];

    /// The Avro / JSON symbol.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Placed => "placed",
            Self::Cancelled => "cancelled",
            Self::Refunded => "refunded",
        }
    }

    /// Parses a symbol.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One clickstream interaction (`schemas/clickstream.avsc`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClickEvent {
    /// Producer-assigned unique id.
    pub event_id: String,
    /// Customer; non-empty.
    pub customer_id: CustomerId,
    /// Producer's session id, if any.
    #[serde(default)]
    pub session_id: Option<String>,
    /// What happened.
    pub event_type: ClickEventType,
    /// When it happened.
    pub event_time: EventTime,
    /// Device class.
    #[serde(default)]
    pub device: Option<String>,
    /// Page path.
    #[serde(default)]
    pub page: Option<String>,
    /// Product concerned.
    #[serde(default)]
    pub product_id: Option<String>,
    /// Category concerned.
    #[serde(default)]
    pub category: Option<String>,
    /// Unit price; finite, not negative.
    #[serde(default)]
    pub price: Option<f64>,
    /// Search text.
    #[serde(default)]
    pub search_query: Option<String>,
}

/// One order life-cycle event (`schemas/orders.avsc`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderEvent {
    /// Order id.
    pub order_id: String,
    /// Customer; non-empty.
    pub customer_id: CustomerId,
    /// When the status changed.
    pub event_time: EventTime,
    /// The new status.
    pub status: OrderStatus,
    /// Amount paid after discount.
    pub total: f64,
    /// ISO 4217 code.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Discount granted.
    #[serde(default)]
    pub discount_amount: f64,
    /// Number of items.
    #[serde(default = "default_item_count")]
    pub item_count: i32,
    /// Distinct categories of the items.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Payment method.
    #[serde(default)]
    pub payment_method: Option<String>,
}

fn default_currency() -> String {
    "EUR".to_owned()
}

const fn default_item_count() -> i32 {
    1
}
