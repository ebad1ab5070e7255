//! The CLI's way to a running server (`--endpoint URL --token T`): plain HTTP with `ureq`,
//! errors turned back into the vault's own.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::ltx::{Checksum, TxId};

/// The requests the CLI sends.
#[derive(Clone, Copy)]
enum Method {
    Get,
    Post,
    Delete,
}

/// A server the CLI talks to.
pub(crate) struct Remote {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

/// What the server says about a snapshot it sends (its `Ltxvault-*` headers).
pub(crate) struct Point {
    pub txid: TxId,
    pub checksum: Checksum,
    pub commit: u32,
    pub page_size: u32,
}

impl Remote {
    pub(crate) fn new(endpoint: &str, token: Option<&str>) -> Result<Remote> {
        let base = endpoint.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            return Err(Error::Invalid(format!(
                "--endpoint {endpoint}: expected http://HOST:PORT (this build speaks plain HTTP; put TLS in front of it)"
            )));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .build()
            .into();
        Ok(Remote { agent, base, token: token.map(str::to_string) })
    }

    fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<ureq::http::Response<ureq::Body>> {
        self.send(Method::Get, path, query)
    }

    /// Sends a request without a body; a reply other than 2xx becomes an error that
    /// carries the server's status, code and message.
    fn send(&self, method: Method, path: &str, query: &[(&str, &str)]) -> Result<ureq::http::Response<ureq::Body>> {
        let url = format!("{}{path}", self.base);
        let sent = match method {
            Method::Get => self.prepare(self.agent.get(&url), query).call(),
            Method::Delete => self.prepare(self.agent.delete(&url), query).call(),
            Method::Post => self.prepare(self.agent.post(&url), query).send_empty(),
        };
        let mut response = sent.map_err(|e| Error::Invalid(format!("{url}: {e}")))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let message = body["error"].as_str().map_or(text.clone(), str::to_string);
        Err(Error::Invalid(format!(
            "{} answered {} {}: {message}",
            self.base,
            response.status().as_u16(),
            body["code"].as_str().unwrap_or("")
        )))
    }

    /// A request with the query and the credential.
    fn prepare<B>(&self, request: ureq::RequestBuilder<B>, query: &[(&str, &str)]) -> ureq::RequestBuilder<B> {
        let mut request = request;
        for (key, value) in query {
            request = request.query(*key, *value);
        }
        match &self.token {
            Some(token) => request.header("Authorization", token),
            None => request,
        }
    }

    /// A JSON reply to a request that changes something (`POST`, or `DELETE` when
    /// `delete`).
    pub(crate) fn change(&self, delete: bool, path: &str, query: &[(&str, &str)]) -> Result<serde_json::Value> {
        let response = self.send(if delete { Method::Delete } else { Method::Post }, path, query)?;
        self.read_json(response)
    }

    /// A JSON reply.
    pub(crate) fn json(&self, path: &str, query: &[(&str, &str)]) -> Result<serde_json::Value> {
        let response = self.get(path, query)?;
        self.read_json(response)
    }

    fn read_json(&self, mut response: ureq::http::Response<ureq::Body>) -> Result<serde_json::Value> {
        let text = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| Error::Invalid(format!("{}: {e}", self.base)))?;
        serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: the reply is not JSON: {e}", self.base)))
    }

    /// Streams a snapshot into `out`; returns the point it is.
    pub(crate) fn download(&self, path: &str, query: &[(&str, &str)], out: &std::fs::File) -> Result<Point> {
        let mut response = self.get(path, query)?;
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let missing = |name: &str| Error::Invalid(format!("{}: the reply has no valid {name} header", self.base));
        let hex = |name: &str| header(name).and_then(|v| u64::from_str_radix(&v, 16).ok()).ok_or_else(|| missing(name));
        let number = |name: &str| header(name).and_then(|v| v.parse::<u32>().ok()).ok_or_else(|| missing(name));
        let point = Point {
            txid: TxId(hex("Ltxvault-Txid")?),
            checksum: Checksum(hex("Ltxvault-Checksum")?),
            commit: number("Ltxvault-Commit")?,
            page_size: number("Ltxvault-Page-Size")?,
        };
        let mut reader = response.body_mut().with_config().limit(u64::MAX).reader();
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, out);
        std::io::copy(&mut reader, &mut writer).map_err(|e| Error::io(format!("download from {}", self.base), e))?;
        std::io::Write::flush(&mut writer).map_err(|e| Error::io("write the download", e))?;
        Ok(point)
    }
}
