//! Segment assignment and the change records it produces.
//!
//! A customer's lifecycle stage is a pure function of their orders and the
//! evaluation time ([`LifecycleRules::stage_at`]), whatever order the events
//! arrived in (a reactivation is an order after a silence longer than the
//! churn limit, read from the orders, not from the stage held at the time). Between two events it can
//! only change at known due times (first order + new days, last order +
//! at-risk days, ...), so [`CustomerSegments::advance`] walks those due times
//! and reports each time-driven transition with the time it became true, not
//! the time it was noticed. Every transition becomes an `exited` and an
//! `entered` [`SegmentChange`](segstream_events::SegmentChange) whose id is a
//! UUID v5 of its cause: the same input always yields the same ids.
//!
//! RFM ([`RfmRules`]): recency, frequency and monetary scores 1–5 and a
//! named table, from the versioned segment definitions file
//! ([`SegmentDefinitions`]); the scores change with new orders and, with no
//! event, when recency crosses a bound or an order leaves the window (due
//! times, like the lifecycle's).
//!
//! Behaviour segments ([`BehaviourRules`]) from the same file: discount
//! hunter, category fan per top category, big spender, frequent visitor,
//! one-time buyer; they read only what is exact per event (orders,
//! sessions), so replays repeat them. One more is built in: `cart_abandoner`, entered when the
//! cart's last add is `features.cart_abandon_hours` old with no order (a
//! timer, like the lifecycle's), left on an order, an emptied cart, a new add
//! or when the cart leaves the activity window.

mod behaviour;
mod changes;
mod custom;
mod definitions;
mod lifecycle;
mod model;
mod names;
mod rfm;

use std::sync::Arc;

pub use behaviour::{
    BIG_SPENDER, BehaviourRules, BigSpender, CATEGORY_FAN, CategoryFan, DISCOUNT_HUNTER, DiscountHunter,
    FREQUENT_VISITOR, FrequentVisitor, HIGH_INTENT_BROWSER, HighIntentBrowser, MOBILE_FIRST, MobileFirst,
    NIGHT_OWL, NightOwl, ONE_TIME_BUYER, OneTimeBuyer,
};
pub use changes::{Cause, to_changes};
pub use custom::{CustomDefinition, CustomRules, CustomSegment, Evaluation};
pub use definitions::{BUILTIN, DefinitionError, RfmDefinition, RfmRow, SegmentDefinitions};
pub use lifecycle::{
    CART_ABANDONER, CustomerSegments, LifecycleRules, LifecycleStage, Observe, Subject, Transition,
};
pub use model::{ModelError, ModelRules, cluster_segment};
pub use rfm::{BoundarySource, RfmBoundaries, RfmRules, RfmScores};

/// Every rule in force: the lifecycle thresholds of the configuration, the
/// segment definitions and the trained model, if one is in force.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentRules {
    /// Lifecycle stages.
    pub lifecycle: LifecycleRules,
    /// The definitions file's segments (the RFM boundaries the model's when
    /// it gives some).
    pub definitions: SegmentDefinitions,
    /// The trained model in force: scores, clusters and RFM boundaries.
    pub model: Option<Arc<ModelRules>>,
}

impl SegmentRules {
    /// A customer as these rules read them: with the name dictionaries only
    /// when a rule reads a category (the features are cheaper without).
    pub fn subject<'a>(
        &self,
        state: &'a segstream_features::CustomerState,
        config: &'a segstream_config::FeaturesConfig,
        dict: &'a segstream_features::Dictionaries,
    ) -> Subject<'a> {
        let behaviour = &self.definitions.behaviour;
        Subject {
            state,
            config,
            dict: behaviour.reads_categories().then_some(dict),
            clicks: behaviour.reads_clicks(),
        }
    }

    /// These rules with other segment definitions (the lifecycle stays):
    /// `text` is a definitions file, `origin` names it in errors.
    pub fn with_definitions(
        &self,
        text: &str,
        origin: &str,
        features: &segstream_config::FeaturesConfig,
    ) -> Result<Self, DefinitionError> {
        let rules = Self {
            lifecycle: self.lifecycle.clone(),
            definitions: SegmentDefinitions::parse(text, origin, features)?,
            model: None,
        };
        match &self.model {
            Some(model) => rules.with_model(Arc::clone(model)).map_err(|problem| DefinitionError::Segment {
                origin: origin.to_owned(),
                segment: "rfm".to_owned(),
                problem,
            }),
            None => Ok(rules),
        }
    }

    /// These rules with a trained model in force: its RFM quintiles become
    /// the RFM boundaries when they are over the definitions' RFM window
    /// (otherwise the definitions' boundaries stay). An error says why the
    /// quintiles cannot be boundaries.
    pub fn with_model(&self, model: Arc<ModelRules>) -> Result<Self, String> {
        let mut rules = self.clone();
        if let Some(rfm) = &mut rules.definitions.rfm {
            *rfm = rfm.with_defined_boundaries();
            let quintiles = model.model().rfm.as_ref();
            if let Some(q) = quintiles.filter(|q| u32::try_from(q.window_days) == Ok(rfm.window_days())) {
                let bounds =
                    |v: &[f64]| <[f64; 4]>::try_from(v).map_err(|_| format!("{v:?} is not 4 bounds"));
                let boundaries = RfmBoundaries::from_model(
                    &model.version().to_string(),
                    bounds(&q.recency_max_days)?,
                    bounds(&q.frequency_min)?,
                    bounds(&q.monetary_min)?,
                )
                .map_err(|e| format!("the RFM quintiles of model {}: {e}", model.version()))?;
                *rfm = rfm.with_boundaries(boundaries);
            }
        }
        rules.model = Some(model);
        Ok(rules)
    }

    /// The rules a configuration names: its `[lifecycle]` section and the
    /// definitions file of `segments.definitions` (the built-in one when empty).
    pub fn from_config(config: &segstream_config::Config) -> Result<Self, DefinitionError> {
        let mut lifecycle = config.lifecycle.clone();
        if lifecycle.high_value_window_days == 0 {
            lifecycle.high_value_window_days =
                config.features.order_windows_days.iter().copied().max().unwrap_or(0);
        }
        Ok(Self {
            lifecycle: LifecycleRules::new(lifecycle),
            definitions: SegmentDefinitions::load(&config.segments.definitions, &config.features)?,
            model: None,
        })
    }
}

#[cfg(test)]
mod tests;
