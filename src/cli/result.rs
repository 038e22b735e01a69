//! What `recipe run` prints on stdout when it ends, and the live state of containers that
//! `recipe run` and `status` show.
//!
//! Everything a run says while it works goes to stderr (log lines); stdout holds only the
//! result: a short block for a person, or with `--json` one document (`version` 1, see
//! `docs/json.md`). The block names each container with its live state, each endpoint the
//! recipe recorded with the command that reads its API key and a request to try it, and
//! the `destroy` command — all spelled with the program and global options the operator
//! used ([`crate::report::Invocation`]).
//!
//! Decision: a failed run prints no block (the error on stderr says what to do); with
//! `--json` it prints the document with `ok: false` and the error, so a script still learns
//! which containers exist.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::Serialize;

use crate::host::{CtStatus, Host};
use crate::report::{Api, Endpoint, Invocation, NamedValue, OutputItem, Scalar};
use crate::settings::HostKind;
use crate::types::{SecretName, Vmid};

/// How long `status` waits for an endpoint's port to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A container as the host reports it now.
#[derive(Debug, Clone, Serialize)]
pub struct LiveContainer {
    /// The container id.
    pub vmid: Vmid,
    /// Its name (the config entry's, else the host's `hostname`).
    pub name: Option<String>,
    /// `running`, `stopped` or `absent`; `null` when the host could not be asked.
    pub state: Option<CtStatus>,
    /// Its IPv4 address as the host reports it, while it runs.
    pub address: Option<String>,
    /// Why the state or address is unknown.
    pub error: Option<String>,
}

impl LiveContainer {
    /// Ask `host` about `vmid`; `name` and `iface` from the config when known.
    pub fn query(host: &dyn Host, vmid: Vmid, name: Option<String>, iface: Option<&str>) -> Self {
        let mut live = Self {
            vmid,
            name,
            state: None,
            address: None,
            error: None,
        };
        let conf = match host.ct_config(vmid) {
            Ok(c) => c,
            Err(e) => {
                live.error = Some(chain(&e));
                return live;
            }
        };
        let Some(conf) = conf else {
            live.state = Some(CtStatus::Absent);
            return live;
        };
        if live.name.is_none() {
            live.name = conf.get("hostname").map(str::to_owned);
        }
        // `net0: name=eth0,bridge=vmbr0,…` names the interface the host reports.
        let iface = iface.map(str::to_owned).unwrap_or_else(|| {
            conf.get("net0")
                .and_then(|n| n.split(',').find_map(|kv| kv.strip_prefix("name=")))
                .unwrap_or("eth0")
                .to_owned()
        });
        match host.ct_status(vmid) {
            Ok(state) => live.state = Some(state),
            Err(e) => {
                live.error = Some(chain(&e));
                return live;
            }
        }
        if live.state == Some(CtStatus::Running) {
            match host.ct_address(vmid, &iface) {
                Ok(a) => live.address = Some(a.to_string()),
                Err(e) => live.error = Some(chain(&e)),
            }
        }
        live
    }

    /// `901 drdevstral: running, 10.0.0.110`.
    pub fn line(&self) -> String {
        let mut s = self.vmid.to_string();
        if let Some(n) = &self.name {
            s.push(' ');
            s.push_str(n);
        }
        s.push_str(": ");
        match self.state {
            Some(state) => s.push_str(&state.to_string()),
            None => s.push_str("state unknown"),
        }
        if let Some(a) = &self.address {
            s.push_str(", ");
            s.push_str(a);
        }
        if let Some(e) = &self.error {
            s.push_str(&format!(" ({e})"));
        }
        s
    }
}

/// A secret the operator can read, and the command that reads it.
#[derive(Debug, Clone, Serialize)]
pub struct SecretRef {
    /// The secret's name.
    pub secret: SecretName,
    /// Shell text that prints it.
    pub command: String,
}

/// An endpoint as the result shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointView {
    /// Its label.
    pub name: Option<String>,
    /// The URL.
    pub url: String,
    /// The protocol.
    pub api: Api,
    /// The model it serves.
    pub model: Option<String>,
    /// The container serving it.
    pub vmid: Option<Vmid>,
    /// How to read its API key.
    pub api_key: Option<SecretRef>,
    /// A request that shows it works (shell text).
    pub example: String,
    /// Whether its port accepts a connection now (`status` only; `null` when not checked).
    pub listening: Option<bool>,
}

impl EndpointView {
    /// The view of `e` with commands spelled for `inv`.
    pub fn new(e: &Endpoint, inv: &Invocation) -> Self {
        Self {
            name: e.name.clone(),
            url: e.url.clone(),
            api: e.api,
            model: e.model.clone(),
            vmid: e.vmid,
            api_key: e.api_key.as_ref().map(|s| SecretRef {
                secret: s.clone(),
                command: inv.read_secret(s),
            }),
            example: inv.example(e),
            listening: None,
        }
    }

    /// The label rows of this endpoint in `status`: without the example request.
    pub fn status_rows(&self, rows: &mut Vec<(String, String)>) {
        self.rows(rows);
        rows.retain(|(label, _)| label != "try");
    }

    /// The label rows of this endpoint in a block.
    fn rows(&self, rows: &mut Vec<(String, String)>) {
        let mut what = Vec::new();
        if let Some(n) = &self.name {
            what.push(n.clone());
        }
        if self.api == Api::Openai {
            what.push("OpenAI API".to_owned());
        }
        match self.listening {
            Some(true) => what.push("listening".to_owned()),
            Some(false) => what.push("NOT listening".to_owned()),
            None => {}
        }
        let mut url = self.url.clone();
        if !what.is_empty() {
            url.push_str(&format!(" ({})", what.join(", ")));
        }
        rows.push(("endpoint".into(), url));
        if let Some(m) = &self.model {
            rows.push(("model".into(), m.clone()));
        }
        if let Some(k) = &self.api_key {
            rows.push(("API key".into(), k.command.clone()));
        }
        rows.push(("try".into(), self.example.clone()));
    }
}

/// A named value as the result shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ValueView {
    /// Its label.
    pub name: String,
    /// The value (`null` for a secret).
    pub value: Option<Scalar>,
    /// How to read it, when it is a secret.
    pub secret: Option<SecretRef>,
}

impl ValueView {
    fn new(v: &NamedValue, inv: &Invocation) -> Self {
        Self {
            name: v.name.clone(),
            value: v.value.clone(),
            secret: v.secret.as_ref().map(|s| SecretRef {
                secret: s.clone(),
                command: inv.read_secret(s),
            }),
        }
    }
}

/// The result of `recipe run` (the `--json` document).
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Format version ([`JSON_VERSION`]).
    pub version: u32,
    /// Whether the run succeeded.
    pub ok: bool,
    /// Whether it was a dry run (then `plan` holds the changes it would make).
    pub dry_run: bool,
    /// The recipe file's name.
    pub recipe: String,
    /// The run id (in the journal and the tags).
    pub run: String,
    /// The host backend.
    pub host: HostKind,
    /// How long it took, in milliseconds.
    pub elapsed_ms: u64,
    /// The containers the run served or touched, with their live state.
    pub containers: Vec<LiveContainer>,
    /// What the recipe reported with `output.endpoint`.
    pub endpoints: Vec<EndpointView>,
    /// What the recipe reported with `output.set`.
    pub values: Vec<ValueView>,
    /// The command that removes what the run made (`null` when nothing is recorded).
    pub destroy: Option<String>,
    /// A dry run's planned changes, one per line.
    pub plan: Option<Vec<String>>,
    /// Why the run failed (the error and its causes).
    pub error: Option<String>,
}

impl RunResult {
    /// Views of `outputs` for `inv`.
    pub fn outputs(
        outputs: &[OutputItem],
        inv: &Invocation,
    ) -> (Vec<EndpointView>, Vec<ValueView>) {
        let mut endpoints = Vec::new();
        let mut values = Vec::new();
        for o in outputs {
            match o {
                OutputItem::Endpoint(e) => endpoints.push(EndpointView::new(e, inv)),
                OutputItem::Value(v) => values.push(ValueView::new(v, inv)),
            }
        }
        (endpoints, values)
    }

    /// The block a person reads.
    pub fn human(&self) -> String {
        let mut head = format!(
            "{} finished in {:.1} s (run {}, {} host)\n",
            self.recipe,
            self.elapsed_ms as f64 / 1000.0,
            self.run,
            self.host
        );
        let mut rows: Vec<(String, String)> = Vec::new();
        for c in &self.containers {
            rows.push(("container".into(), c.line()));
        }
        for e in &self.endpoints {
            e.rows(&mut rows);
        }
        for v in &self.values {
            let text = match (&v.value, &v.secret) {
                (_, Some(s)) => s.command.clone(),
                (Some(x), None) => x.to_string(),
                (None, None) => String::new(),
            };
            rows.push((v.name.clone(), text));
        }
        if let Some(d) = &self.destroy {
            rows.push(("remove".into(), d.clone()));
        }
        let width = rows
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0);
        for (label, text) in rows {
            head.push_str(&format!("  {label:width$}  {text}\n"));
        }
        head
    }
}

/// Whether `url`'s host and port accept a TCP connection, checked only when the host is the
/// container's live `address` (status never connects anywhere a recipe merely wrote down).
pub fn listening(url: &str, address: Option<&str>) -> Option<bool> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    if Some(host) != address {
        return None;
    }
    let port = parsed.port_or_known_default()?;
    let addr: SocketAddr = format!("{host}:{port}").parse().ok()?;
    Some(TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).is_ok())
}

/// An error with its causes on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::JSON_VERSION;

    fn result() -> RunResult {
        let inv = Invocation {
            program: "./phoenix".into(),
            globals: vec!["--host".into(), "emulated".into()],
        };
        let (endpoints, values) = RunResult::outputs(
            &[
                OutputItem::Endpoint(Endpoint {
                    name: Some("vLLM".into()),
                    url: "http://127.0.0.9:8000/v1".into(),
                    api: Api::Openai,
                    model: Some("org/m".into()),
                    api_key: Some("vllm_api_key".parse().unwrap()),
                    vmid: Some(Vmid::new(901).unwrap()),
                }),
                OutputItem::Value(NamedValue {
                    name: "root password".into(),
                    value: None,
                    secret: Some("lxc_root_password".parse().unwrap()),
                }),
            ],
            &inv,
        );
        RunResult {
            version: JSON_VERSION,
            ok: true,
            dry_run: false,
            recipe: "r.rhai".into(),
            run: "abc-1".into(),
            host: HostKind::Emulated,
            elapsed_ms: 4120,
            containers: vec![LiveContainer {
                vmid: Vmid::new(901).unwrap(),
                name: Some("box".into()),
                state: Some(CtStatus::Running),
                address: Some("127.0.0.9".into()),
                error: None,
            }],
            endpoints,
            values,
            destroy: Some(inv.destroy(&[Vmid::new(901).unwrap()])),
            plan: None,
            error: None,
        }
    }

    #[test]
    fn the_block_names_endpoint_model_key_command_example_and_destroy() {
        let text = result().human();
        let want = "\
r.rhai finished in 4.1 s (run abc-1, emulated host)
  container      901 box: running, 127.0.0.9
  endpoint       http://127.0.0.9:8000/v1 (vLLM, OpenAI API)
  model          org/m
  API key        ./phoenix secret get vllm_api_key --reveal --host emulated
  try            curl -sS http://127.0.0.9:8000/v1/completions -H 'Content-Type: application/json' -d '{\"max_tokens\":16,\"model\":\"org/m\",\"prompt\":\"Hello\"}' -H \"Authorization: Bearer $(./phoenix secret get vllm_api_key --reveal --host emulated)\"
  root password  ./phoenix secret get lxc_root_password --reveal --host emulated
  remove         ./phoenix destroy --lxc 901 --host emulated
";
        assert_eq!(text, want);
    }

    #[test]
    fn the_json_document_has_version_and_nulls_for_absent_values() {
        let mut r = result();
        r.containers[0].address = None;
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["containers"][0]["address"], serde_json::Value::Null);
        assert_eq!(v["containers"][0]["state"], "running");
        assert_eq!(v["endpoints"][0]["api_key"]["secret"], "vllm_api_key");
        assert_eq!(v["endpoints"][0]["api"], "openai");
        assert_eq!(v["endpoints"][0]["listening"], serde_json::Value::Null);
        assert_eq!(v["values"][0]["value"], serde_json::Value::Null);
        assert_eq!(v["plan"], serde_json::Value::Null);
        assert_eq!(v["error"], serde_json::Value::Null);
    }

    #[test]
    fn listening_connects_only_to_the_live_address() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/v1");
        assert_eq!(listening(&url, Some("127.0.0.1")), Some(true));
        assert_eq!(listening(&url, Some("127.0.0.2")), None);
        assert_eq!(listening(&url, None), None);
    }
}
