//! `kubeadm token create|list|delete`: bootstrap-token Secrets in kube-system, with the
//! fields kubeadm writes (`token-id`, `token-secret`, `expiration`, usages, extra groups),
//! through the node's admin kubeconfig.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::{Flags, KubeadmCtx, error_exit, failure};
use crate::lab::ExecOutput;
use crate::lab::clock;
use crate::lab::components::client::{ApiClient, Kubeconfig};
use crate::lab::files::bootstrap_token;
use crate::lab::pki;

/// kubeadm's `BootstrapTokenPattern`.
const TOKEN_PATTERN: &str = r"^([a-z0-9]{6})\.([a-z0-9]{16})$";
const DEFAULT_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
const SECRETS: &str = "/api/v1/namespaces/kube-system/secrets";

pub async fn run(ctx: &KubeadmCtx<'_>, args: &[&str]) -> ExecOutput {
    match args.split_first() {
        Some((&"create", rest)) => create(ctx, rest).await,
        Some((&"list", rest)) => list(ctx, rest).await,
        Some((&"delete", rest)) => delete(ctx, rest).await,
        Some((&"generate", _)) => match bootstrap_token() {
            Ok(t) => ExecOutput {
                stdout: format!("{t}\n"),
                ..Default::default()
            },
            Err(e) => error_exit(String::new(), &e.to_string()),
        },
        Some((other, _)) if !other.starts_with('-') => failure(format!(
            "Error: unknown command \"{other}\" for \"kubeadm token\"\nRun 'kubeadm token --help' for usage.\n"
        )),
        _ => failure(
            "Error: missing subcommand; \"token\" is not meant to be run on its own\nTo see the stack trace of this error execute with --v=5 or higher\n",
        ),
    }
}

pub use crate::lab::files::parse_bootstrap_token as parse_token;

/// A Go duration (`24h0m0s`, `2h`, `90s`, `0`).
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration {text:?}");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration {text:?}"))?;
        let number: f64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            unit => return Err(format!("time: unknown unit {unit:?} in duration {text:?}")),
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

/// The Secret kubeadm stores for a token.
pub fn token_secret(
    token: &str,
    description: &str,
    ttl: Duration,
    usages: &[&str],
    groups: &[&str],
) -> Result<Value, String> {
    let (id, secret) = parse_token(token).ok_or_else(|| {
        format!("the bootstrap token {token:?} was not of the form {TOKEN_PATTERN:?}")
    })?;
    let b = |s: &str| json!(STANDARD.encode(s));
    let mut data = serde_json::Map::new();
    data.insert("token-id".into(), b(id));
    data.insert("token-secret".into(), b(secret));
    if !description.is_empty() {
        data.insert("description".into(), b(description));
    }
    if !ttl.is_zero() {
        let expires = clock::now_unix() + ttl.as_secs() as i64;
        data.insert("expiration".into(), b(&clock::rfc3339(expires)));
    }
    for usage in usages {
        data.insert(format!("usage-bootstrap-{usage}"), b("true"));
    }
    if !groups.is_empty() {
        data.insert("auth-extra-groups".into(), b(&groups.join(",")));
    }
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "data": data,
    }))
}

/// The client kubeadm builds from `--kubeconfig` (admin.conf by default).
pub fn admin_client(
    ctx: &KubeadmCtx<'_>,
    flags: &Flags,
) -> Result<(ApiClient, Kubeconfig), String> {
    let path = flags.get("kubeconfig").unwrap_or(ADMIN_CONF);
    let kc = Kubeconfig::load(ctx.lab, ctx.node, path)
        .map_err(|e| format!("failed to load admin kubeconfig: {e}"))?;
    let client = ApiClient::from_kubeconfig(ctx.lab, ctx.node, path)
        .map_err(|e| format!("failed to load admin kubeconfig: {e}"))?
        .with_timeout(Duration::from_secs(10))
        .with_component("kubeadm", ctx.spec.version);
    Ok((client, kc))
}

/// Creates the Secret, failing when the token id is taken (kubeadm's `failIfExists`).
pub async fn create_secret(client: &ApiClient, secret: &Value) -> Result<Value, String> {
    let name = secret["metadata"]["name"].as_str().unwrap_or_default();
    let r = client
        .create(SECRETS, secret)
        .await
        .map_err(|e| format!("failed to create or update bootstrap token with name {name}: {e}"))?;
    if r.status == 409 {
        let id = name.trim_start_matches("bootstrap-token-");
        return Err(format!("a token with id {id:?} already exists"));
    }
    if !r.is_success() {
        return Err(format!(
            "failed to create or update bootstrap token with name {name}: {}",
            r.status_message()
        ));
    }
    r.json()
}

async fn create(ctx: &KubeadmCtx<'_>, args: &[&str]) -> ExecOutput {
    let flags = match Flags::parse(
        args,
        &[
            "ttl",
            "kubeconfig",
            "usages",
            "groups",
            "description",
            "config",
            "certificate-key",
        ],
        &["print-join-command", "dry-run"],
    ) {
        Ok(f) => f,
        Err(e) => return failure(format!("Error: {e}\n")),
    };
    let ttl = match parse_go_duration(flags.get("ttl").unwrap_or("24h0m0s")) {
        Ok(d) => d,
        Err(e) => {
            return failure(format!(
                "Error: invalid argument {:?} for \"--ttl\" flag: {e}\n",
                flags.get("ttl").unwrap_or("")
            ));
        }
    };
    let token = match flags.positional.first() {
        Some(t) => t.clone(),
        None => match bootstrap_token() {
            Ok(t) => t,
            Err(e) => return error_exit(String::new(), &e.to_string()),
        },
    };
    let usages: Vec<&str> = flags
        .get("usages")
        .unwrap_or("signing,authentication")
        .split(',')
        .filter(|u| !u.is_empty())
        .collect();
    if let Some(bad) = usages
        .iter()
        .find(|u| !matches!(**u, "signing" | "authentication"))
    {
        return error_exit(
            String::new(),
            &format!(
                "invalid bootstrap token usage string: {bad}, valid usage options: signing, authentication"
            ),
        );
    }
    let groups: Vec<&str> = flags
        .get("groups")
        .unwrap_or(DEFAULT_GROUP)
        .split(',')
        .filter(|g| !g.is_empty())
        .collect();
    let description = flags.get("description").unwrap_or("");
    let secret = match token_secret(&token, description, ttl, &usages, &groups) {
        Ok(s) => s,
        Err(e) => return error_exit(String::new(), &e),
    };
    let (client, kc) = match admin_client(ctx, &flags) {
        Ok(c) => c,
        Err(e) => return error_exit(String::new(), &e),
    };
    if let Err(e) = create_secret(&client, &secret).await {
        return error_exit(String::new(), &e);
    }
    if !flags.is_set("print-join-command") {
        return ExecOutput {
            stdout: format!("{token}\n"),
            ..Default::default()
        };
    }
    // kubeadm takes the join address and the CA pin from the kubeconfig it used.
    let ca = String::from_utf8_lossy(&kc.ca_pem).into_owned();
    let pin = match pki::ca_pin(&ca) {
        Ok(p) => p,
        Err(e) => return error_exit(String::new(), &format!("failed to get join command: {e}")),
    };
    let host_port = kc
        .server
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let mut line =
        format!("kubeadm join {host_port} --token {token} --discovery-token-ca-cert-hash {pin} ");
    if let Some(key) = flags.get("certificate-key") {
        line.push_str(&format!("--control-plane --certificate-key {key}"));
    }
    line.push('\n');
    ExecOutput {
        stdout: line,
        ..Default::default()
    }
}

fn b64_field(secret: &Value, key: &str) -> Option<String> {
    let raw = STANDARD.decode(secret["data"][key].as_str()?).ok()?;
    String::from_utf8(raw).ok()
}

/// Go's `duration.ShortHumanDuration`.
fn short_human(secs: i64) -> String {
    if secs < -1 {
        "<invalid>".into()
    } else if secs < 0 {
        "0s".into()
    } else if secs < 60 {
        format!("{secs}s")
    } else if secs < 60 * 60 {
        format!("{}m", secs / 60)
    } else if secs < 60 * 60 * 24 {
        format!("{}h", secs / 3600)
    } else if secs < 60 * 60 * 24 * 365 {
        format!("{}d", secs / 86400)
    } else {
        format!("{}y", secs / (86400 * 365))
    }
}

/// Go's `text/tabwriter` with kubeadm's settings (minwidth 10, padding 3, spaces).
fn tabulate(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count() + 3)
                .max()
                .unwrap_or(0)
                .max(10)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - cell.chars().count()));
            }
        }
        out.push('\n');
    }
    out
}

async fn list(ctx: &KubeadmCtx<'_>, args: &[&str]) -> ExecOutput {
    let flags = match Flags::parse(args, &["kubeconfig", "output", "o"], &["dry-run"]) {
        Ok(f) => f,
        Err(e) => return failure(format!("Error: {e}\n")),
    };
    let (client, _) = match admin_client(ctx, &flags) {
        Ok(c) => c,
        Err(e) => return error_exit(String::new(), &e),
    };
    let items = match client.list(SECRETS).await {
        Ok(r) if r.is_success() => match r.json() {
            Ok(v) => v["items"].as_array().cloned().unwrap_or_default(),
            Err(e) => {
                return error_exit(
                    String::new(),
                    &format!("failed to list bootstrap tokens: {e}"),
                );
            }
        },
        Ok(r) => {
            return error_exit(
                String::new(),
                &format!("failed to list bootstrap tokens: {}", r.status_message()),
            );
        }
        Err(e) => {
            return error_exit(
                String::new(),
                &format!("failed to list bootstrap tokens: {e}"),
            );
        }
    };
    let now = clock::now_unix();
    let mut rows = vec![
        [
            "TOKEN",
            "TTL",
            "EXPIRES",
            "USAGES",
            "DESCRIPTION",
            "EXTRA GROUPS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut tokens: Vec<&Value> = items
        .iter()
        .filter(|s| s["type"] == "bootstrap.kubernetes.io/token")
        .collect();
    tokens.sort_by_key(|s| {
        s["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    });
    for s in tokens {
        let (Some(id), Some(secret)) = (b64_field(s, "token-id"), b64_field(s, "token-secret"))
        else {
            continue;
        };
        let (ttl, expires) = match b64_field(s, "expiration") {
            None => ("<forever>".to_string(), "<never>".to_string()),
            Some(exp) => match clock::parse_rfc3339_unix(&exp) {
                Some(t) => (short_human(t - now), clock::rfc3339(t)),
                None => ("<invalid>".into(), exp),
            },
        };
        let mut usages: Vec<String> = s["data"]
            .as_object()
            .map(|d| {
                d.keys()
                    .filter_map(|k| k.strip_prefix("usage-bootstrap-"))
                    .filter(|k| {
                        b64_field(s, &format!("usage-bootstrap-{k}")).as_deref() == Some("true")
                    })
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        usages.sort();
        let usages = if usages.is_empty() {
            "<none>".into()
        } else {
            usages.join(",")
        };
        let description = b64_field(s, "description")
            .filter(|d| !d.is_empty())
            .unwrap_or("<none>".into());
        let groups = b64_field(s, "auth-extra-groups")
            .filter(|g| !g.is_empty())
            .unwrap_or("<none>".into());
        rows.push(vec![
            format!("{id}.{secret}"),
            ttl,
            expires,
            usages,
            description,
            groups,
        ]);
    }
    if rows.len() == 1 {
        return ExecOutput::default();
    }
    ExecOutput {
        stdout: tabulate(&rows),
        ..Default::default()
    }
}

async fn delete(ctx: &KubeadmCtx<'_>, args: &[&str]) -> ExecOutput {
    let flags = match Flags::parse(args, &["kubeconfig"], &["dry-run"]) {
        Ok(f) => f,
        Err(e) => return failure(format!("Error: {e}\n")),
    };
    if flags.positional.is_empty() {
        return error_exit(
            String::new(),
            "missing argument; 'token delete' is missing token of form \"^([a-z0-9]{6})$\" or \"^([a-z0-9]{6})\\\\.([a-z0-9]{16})$\"",
        );
    }
    let (client, _) = match admin_client(ctx, &flags) {
        Ok(c) => c,
        Err(e) => return error_exit(String::new(), &e),
    };
    let mut stdout = String::new();
    for arg in &flags.positional {
        let id = match parse_token(arg) {
            Some((id, _)) => id.to_string(),
            None if arg.len() == 6
                && arg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) =>
            {
                arg.clone()
            }
            None => {
                return error_exit(
                    stdout,
                    "given token didn't match pattern \"^([a-z0-9]{6})$\" or \"^([a-z0-9]{6})\\\\.([a-z0-9]{16})$\"",
                );
            }
        };
        let name = format!("bootstrap-token-{id}");
        let failed = |detail: String| format!("failed to delete bootstrap token {id:?}: {detail}");
        match client.delete(&format!("{SECRETS}/{name}")).await {
            Ok(r) if r.is_success() => {
                stdout.push_str(&format!("bootstrap token {id:?} deleted\n"))
            }
            Ok(r) => return error_exit(stdout, &failed(r.status_message())),
            Err(e) => return error_exit(stdout, &failed(e.to_string())),
        }
    }
    ExecOutput {
        stdout,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(
            parse_go_duration("24h0m0s").unwrap(),
            Duration::from_secs(86400)
        );
        assert_eq!(parse_go_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert!(
            parse_go_duration("10")
                .unwrap_err()
                .contains("missing unit")
        );
        assert!(
            parse_go_duration("3d")
                .unwrap_err()
                .contains("unknown unit")
        );
    }

    #[test]
    fn token_secrets_have_kubeadms_fields() {
        let s = token_secret(
            "abcdef.0123456789abcdef",
            "",
            Duration::from_secs(3600),
            &["signing", "authentication"],
            &[DEFAULT_GROUP],
        )
        .unwrap();
        assert_eq!(s["metadata"]["name"], "bootstrap-token-abcdef");
        assert_eq!(s["type"], "bootstrap.kubernetes.io/token");
        assert_eq!(b64_field(&s, "token-secret").unwrap(), "0123456789abcdef");
        assert_eq!(b64_field(&s, "usage-bootstrap-signing").unwrap(), "true");
        let exp = clock::parse_rfc3339_unix(&b64_field(&s, "expiration").unwrap()).unwrap();
        assert!((exp - clock::now_unix() - 3600).abs() <= 1);
        assert!(s["data"].get("description").is_none());
        assert!(token_secret("ABCDEF.0123456789abcdef", "", Duration::ZERO, &[], &[]).is_err());
        let forever =
            token_secret("abcdef.0123456789abcdef", "", Duration::ZERO, &[], &[]).unwrap();
        assert!(forever["data"].get("expiration").is_none());
    }

    #[test]
    fn list_columns_line_up_as_tabwriter_does() {
        let rows = vec![
            vec!["TOKEN".to_string(), "TTL".into(), "EXPIRES".into()],
            vec!["abcdef.0123456789abcdef".into(), "23h".into(), "x".into()],
        ];
        let text = tabulate(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].find("TTL"), lines[1].find("23h"));
        assert_eq!(lines[0].find("TTL"), Some(26));
        assert_eq!(short_human(86399), "23h");
        assert_eq!(short_human(-5), "<invalid>");
    }
}
