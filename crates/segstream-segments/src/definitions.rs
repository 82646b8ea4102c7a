//! Segment definitions: a versioned TOML file (`segments.toml` is the
//! built-in one, every key documented there), read and checked once, turned
//! into the rules the evaluation uses.

use std::path::Path;
use std::sync::Arc;

use segstream_config::FeaturesConfig;
use serde::Deserialize;

use crate::behaviour::BehaviourRules;
use crate::custom::{CustomDefinition, CustomRules};
use crate::rfm::{RfmBoundaries, RfmRules};

/// The built-in definitions, used when no file is configured.
pub const BUILTIN: &str = include_str!("../segments.toml");

/// A definitions file that cannot be used, with what to fix.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    /// The file could not be read.
    #[error("reading the segment definitions {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or a key has the wrong type.
    #[error("segment definitions {origin}: {message}")]
    Parse {
        /// The file, or "built-in".
        origin: String,
        /// The parser's message, naming the key and line.
        message: String,
    },
    /// A segment's definition is wrong.
    #[error("segment definitions {origin}, segment `{segment}`: {problem}")]
    Segment {
        /// The file, or "built-in".
        origin: String,
        /// The segment (or section) at fault.
        segment: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

/// The `[rfm]` section as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RfmDefinition {
    /// Window of the frequency and monetary scores, days.
    pub window_days: u32,
    /// Upper bounds of days since the last order for R = 5, 4, 3, 2.
    pub recency_max_days: [f64; 4],
    /// Lower bounds of net orders in the window for F = 2, 3, 4, 5.
    pub frequency_min: [f64; 4],
    /// Lower bounds of net revenue in the window for M = 2, 3, 4, 5.
    pub monetary_min: [f64; 4],
    /// Named cells, first match wins.
    pub table: Vec<RfmRow>,
    /// Days a buyer stays in an RFM segment at least before moving to
    /// another (against flapping at a bound); 0, the default: none.
    #[serde(default)]
    pub min_dwell_days: f64,
}

/// One row of the RFM table: a name and inclusive score ranges.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RfmRow {
    /// Segment name.
    pub name: String,
    /// Recency score range, inclusive.
    pub r: [u8; 2],
    /// Frequency score range, inclusive.
    pub f: [u8; 2],
    /// Monetary score range, inclusive.
    pub m: [u8; 2],
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: i32,
    rfm: Option<RfmDefinition>,
    #[serde(default)]
    behaviour: BehaviourRules,
    #[serde(default)]
    custom: Vec<CustomDefinition>,
}

/// Checked segment definitions of one version.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentDefinitions {
    /// Version, carried on every change record these rules decide.
    pub version: i32,
    /// The RFM scores and table; `None` when the file has no `[rfm]`
    /// section (no RFM segments).
    pub rfm: Option<RfmRules>,
    /// The behaviour segments turned on.
    pub behaviour: BehaviourRules,
    /// The user-defined SQL segments, compiled.
    pub custom: CustomRules,
    /// The file they were read from, whole: what checkpoints and rollout
    /// decisions record.
    pub text: Arc<str>,
}

impl SegmentDefinitions {
    /// The definitions in `path`, or the built-in ones when `path` is empty,
    /// checked against the feature settings they read.
    pub fn load(path: &str, features: &FeaturesConfig) -> Result<Self, DefinitionError> {
        if path.is_empty() {
            return Self::parse(BUILTIN, "built-in", features);
        }
        let text = std::fs::read_to_string(Path::new(path))
            .map_err(|source| DefinitionError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path, features)
    }

    /// Definitions from TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str, features: &FeaturesConfig) -> Result<Self, DefinitionError> {
        let file: File = toml::from_str(text)
            .map_err(|e| DefinitionError::Parse { origin: origin.to_owned(), message: e.to_string() })?;
        let segment_error = |segment: &str, problem: String| DefinitionError::Segment {
            origin: origin.to_owned(),
            segment: segment.to_owned(),
            problem,
        };
        if file.version < 1 {
            return Err(segment_error("version", format!("version {} must be 1 or more", file.version)));
        }
        file.behaviour
            .check(&features.activity_windows_days)
            .map_err(|(segment, p)| segment_error(&segment, p))?;
        let custom = CustomRules::compile(&file.custom, features)
            .map_err(|(segment, p)| segment_error(&segment, p))?;
        let Some(rfm) = &file.rfm else {
            return Ok(Self {
                version: file.version,
                rfm: None,
                behaviour: file.behaviour,
                custom,
                text: text.into(),
            });
        };
        if !features.order_windows_days.contains(&rfm.window_days) {
            return Err(segment_error(
                "rfm",
                format!(
                    "window_days = {} is not one of features.order_windows_days {:?}: use one of them or add it there",
                    rfm.window_days, features.order_windows_days
                ),
            ));
        }
        let boundaries = RfmBoundaries::from_definition(rfm).map_err(|p| segment_error("rfm", p))?;
        let rfm = RfmRules::new(rfm, boundaries, file.version)
            .map_err(|(segment, p)| segment_error(&segment, p))?;
        Ok(Self {
            version: file.version,
            rfm: Some(rfm),
            behaviour: file.behaviour,
            custom,
            text: text.into(),
        })
    }
}
