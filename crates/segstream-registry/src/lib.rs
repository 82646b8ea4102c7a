//! A client of a Confluent-compatible schema registry (Confluent Schema
//! Registry, Karapace, Apicurio's ccompat API, Redpanda): writer schemas
//! looked up by the id in a record's Confluent header, and registration of
//! the schemas segstream writes. Blocking HTTP (ureq): it is called from
//! the pipeline's own thread, never from the async runtime.

use std::time::Duration;

use base64::Engine;
use segstream_config::SchemaRegistryConfig;
use serde::Deserialize;
use thiserror::Error;

/// Why the registry did not give an answer.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// No answer, a timeout or a server error: worth trying again later.
    #[error("schema registry at {url} unavailable: {problem}")]
    Unavailable {
        /// The registry's address (`schema_registry.url`).
        url: String,
        /// What happened.
        problem: String,
    },
    /// The registry answered, and refused (bad credentials, an
    /// incompatible schema): trying again does not help.
    #[error("schema registry at {url} refused {what}: HTTP {status}: {body}")]
    Refused {
        /// The registry's address.
        url: String,
        /// The request.
        what: String,
        /// HTTP status.
        status: u16,
        /// The registry's message.
        body: String,
    },
    /// The process was asked to stop while it waited for the registry.
    #[error("stopped while waiting for the schema registry at {url}")]
    Stopped {
        /// The registry's address.
        url: String,
    },
    /// The password variable named by `schema_registry.password_env` is not set.
    #[error(
        "schema_registry.username is set but ${0} (schema_registry.password_env) is empty: export it, or clear the username"
    )]
    MissingPassword(String),
}

/// A schema registry.
#[derive(Debug, Clone)]
pub struct Registry {
    url: String,
    authorization: Option<String>,
    agent: ureq::Agent,
}

#[derive(Deserialize)]
struct SchemaAnswer {
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
}

#[derive(Deserialize)]
struct IdAnswer {
    id: u32,
}

/// Content type of the registry's API.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

impl Registry {
    /// The registry `config` names; `None` when `schema_registry.url` is empty.
    pub fn from_config(config: &SchemaRegistryConfig) -> Result<Option<Self>, RegistryError> {
        if config.url.trim().is_empty() {
            return Ok(None);
        }
        let authorization = if config.username.is_empty() {
            None
        } else {
            let password = std::env::var(&config.password_env).unwrap_or_default();
            if password.is_empty() {
                return Err(RegistryError::MissingPassword(config.password_env.clone()));
            }
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", config.username));
            Some(format!("Basic {token}"))
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(config.timeout_ms)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        Ok(Some(Self { url: config.url.trim_end_matches('/').to_owned(), authorization, agent }))
    }

    /// The registry's address.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema text with this id; `None` when the registry has no such
    /// schema (or it is not Avro).
    pub fn schema(&self, id: u32) -> Result<Option<String>, RegistryError> {
        let what = format!("schema id {id}");
        let request = self.authorized(self.agent.get(format!("{}/schemas/ids/{id}", self.url)));
        let (status, body) = self.answer(request.header("Accept", CONTENT_TYPE).call())?;
        match status {
            200 => {
                let answer: SchemaAnswer =
                    serde_json::from_str(&body).map_err(|e| self.refused(&what, status, &e))?;
                let avro = answer.schema_type.as_deref().is_none_or(|t| t.eq_ignore_ascii_case("AVRO"));
                Ok(avro.then_some(answer.schema))
            }
            404 => Ok(None),
            s => Err(RegistryError::Refused { url: self.url.clone(), what, status: s, body }),
        }
    }

    /// Registers `schema` (Avro text) under `subject` (or finds it there)
    /// and returns its id.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let what = format!("registering the schema of subject {subject}");
        let body = serde_json::json!({ "schema": schema }).to_string();
        let request = self.authorized(self.agent.post(format!("{}/subjects/{subject}/versions", self.url)));
        let sent =
            request.header("Content-Type", CONTENT_TYPE).header("Accept", CONTENT_TYPE).send(body.as_bytes());
        let (status, text) = self.answer(sent)?;
        match status {
            200 => serde_json::from_str::<IdAnswer>(&text)
                .map(|a| a.id)
                .map_err(|e| self.refused(&what, status, &e)),
            s => Err(RegistryError::Refused { url: self.url.clone(), what, status: s, body: text }),
        }
    }

    /// Registers the value schema of `topic` under the subject the
    /// Confluent serializers use by default (`<topic>-value`); its id.
    pub fn register_value_schema(&self, topic: &str, schema: &str) -> Result<u32, RegistryError> {
        self.register(&format!("{topic}-value"), schema)
    }

    /// `request` with the basic-auth header, when there is one.
    fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.authorization {
            Some(a) => request.header("Authorization", a),
            None => request,
        }
    }

    /// The status and body of an answer. No answer, or a server error (5xx),
    /// is [`RegistryError::Unavailable`]: worth trying again.
    fn answer(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, String), RegistryError> {
        let response = response.map_err(|e| self.unavailable(&e))?;
        let status = response.status().as_u16();
        let body = response.into_body().read_to_string().map_err(|e| self.unavailable(&e))?;
        if status >= 500 {
            return Err(RegistryError::Unavailable {
                url: self.url.clone(),
                problem: format!("HTTP {status}: {body}"),
            });
        }
        Ok((status, body))
    }

    /// Runs `call` until the registry answers: while it is unavailable,
    /// waits (100 ms, doubling up to 5 s) and tries again; a refusal is
    /// returned at once, and [`RegistryError::Stopped`] once `stop` says so.
    /// A registry outage pauses the caller; it never turns into a wrong
    /// answer.
    pub fn waiting<T>(
        &self,
        stop: &dyn Fn() -> bool,
        mut call: impl FnMut(&Self) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match call(self) {
                Err(e @ RegistryError::Unavailable { .. }) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "schema registry unavailable: waiting for it");
                    let until = std::time::Instant::now() + backoff;
                    while std::time::Instant::now() < until {
                        if stop() {
                            return Err(RegistryError::Stopped { url: self.url.clone() });
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                answer => return answer,
            }
        }
    }

    fn unavailable(&self, e: &ureq::Error) -> RegistryError {
        RegistryError::Unavailable { url: self.url.clone(), problem: e.to_string() }
    }

    fn refused(&self, what: &str, status: u16, e: &serde_json::Error) -> RegistryError {
        RegistryError::Refused {
            url: self.url.clone(),
            what: what.to_owned(),
            status,
            body: format!("an answer that is not the registry API's: {e}"),
        }
    }
}
