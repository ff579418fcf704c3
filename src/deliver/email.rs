//! The `email` channel: one message per alert (or a digest) over SMTP with `lettre`, UTF-8
//! plain text in Chinese (the same text as the robots' markdown), subject encoded per
//! RFC 2047 and body per MIME by `lettre`.
//!
//! The server is the subscription's URL:
//!
//! | URL | transport |
//! |---|---|
//! | `smtp://[user@]host[:587]` | STARTTLS, required (a server without it is an error) |
//! | `smtps://[user@]host[:465]` | TLS from the first byte (implicit TLS) |
//! | `smtp://[user@]host:port?tls=none` | plain text; refused unless the host is loopback |
//!
//! The password is the subscription's secret (the secrets file), never in the URL. Every
//! message carries `Message-ID: <event_id@soilmon>` and `X-Soilmon-Event-Id`, so a mail
//! client or a script can recognise a resent message.

use std::time::Duration;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::render::Message;
use super::Outcome;

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain connection upgraded with STARTTLS (required).
    Starttls,
    /// TLS from the first byte (`smtps`).
    Implicit,
    /// No TLS (loopback only: tests, a local relay).
    None,
}

/// A parsed SMTP server URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Host name (also the name its certificate must carry).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Transport security.
    pub security: Security,
    /// User name for AUTH, if any (the password is the subscription's secret).
    pub user: Option<String>,
}

/// Parses and checks an SMTP server URL (see the module docs).
pub fn parse_server(text: &str) -> Result<Server, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("URL {text:?}: {e}"))?;
    let host = url
        .host_str()
        .ok_or_else(|| format!("URL {text:?}: no host"))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    if url.password().is_some() {
        return Err("SMTP URL: no password in the URL; give it with --secret-file".into());
    }
    let tls = url
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let (security, default_port) = match (url.scheme(), tls.as_deref()) {
        ("smtps", None) => (Security::Implicit, 465),
        ("smtp", None | Some("starttls")) => (Security::Starttls, 587),
        ("smtp", Some("none")) => (Security::None, 25),
        _ => {
            return Err(format!(
                "URL {text:?}: smtp://host[:587] (STARTTLS), smtps://host[:465] or \
                 smtp://host:port?tls=none (loopback only)"
            ))
        }
    };
    if security == Security::None && !is_loopback(&host) {
        return Err(format!(
            "URL {text:?}: tls=none is allowed for a loopback host only"
        ));
    }
    let user = (!url.username().is_empty()).then(|| percent_decode(url.username()));
    Ok(Server {
        port: url.port().unwrap_or(default_port),
        host,
        security,
        user,
    })
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `%40` → `@` in a URL's user name.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A ready SMTP channel: transport, sender and recipients.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

/// Parses one address (`name <a@b>` or `a@b`).
pub fn mailbox(text: &str) -> Result<Mailbox, String> {
    text.trim()
        .parse::<Mailbox>()
        .map_err(|e| format!("address {text:?}: {e}"))
}

impl Mailer {
    /// Builds the channel: `server` (a URL of [`parse_server`]), the sender, the
    /// recipients, the password (the subscription's secret), the timeout and an optional
    /// CA certificate (PEM) the server's certificate must chain to.
    pub fn build(
        server: &str,
        from: &str,
        to: &[String],
        password: Option<&str>,
        timeout: Duration,
        ca_pem: Option<&[u8]>,
    ) -> Result<Mailer, String> {
        let s = parse_server(server)?;
        if to.is_empty() {
            return Err("an e-mail subscription needs at least one --to address".into());
        }
        let to = to
            .iter()
            .map(|t| mailbox(t))
            .collect::<Result<Vec<_>, _>>()?;
        let from = mailbox(from)?;
        let tls = || -> Result<TlsParameters, String> {
            let mut b = TlsParameters::builder(s.host.clone());
            if let Some(pem) = ca_pem {
                // That CA only, as for a webhook's --ca-file: not the system's roots too.
                let cert = Certificate::from_pem(pem).map_err(|e| format!("CA file: {e}"))?;
                b = b
                    .certificate_store(CertificateStore::None)
                    .add_root_certificate(cert);
            }
            b.build_rustls().map_err(|e| format!("TLS: {e}"))
        };
        let tls = match s.security {
            Security::Starttls => Tls::Required(tls()?),
            Security::Implicit => Tls::Wrapper(tls()?),
            Security::None => Tls::None,
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host.clone())
            .port(s.port)
            .tls(tls)
            .timeout(Some(timeout));
        if let Some(user) = &s.user {
            b = b.credentials(Credentials::new(
                user.clone(),
                password.unwrap_or_default().to_string(),
            ));
        }
        Ok(Mailer {
            transport: b.build(),
            from,
            to,
        })
    }

    /// Sends `m` as one message identified by `event_id`; `attempt` goes in a header.
    pub async fn send(&self, m: &Message, event_id: &str, attempt: i32) -> Outcome {
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .subject(m.title.as_str())
            .message_id(Some(format!("<{event_id}@soilmon>")))
            .header(ContentType::TEXT_PLAIN)
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Soilmon-Event-Id"),
                event_id.to_string(),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Soilmon-Attempt"),
                attempt.to_string(),
            ));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let message = match builder.body(m.text.clone()) {
            Ok(msg) => msg,
            Err(e) => return Outcome::failed(format!("building the message: {e}")),
        };
        match self.transport.send(message).await {
            Ok(r) => Outcome::Delivered {
                status: r.code().into(),
                answer: super::clip(&r.message().collect::<Vec<_>>().join(" "), 500),
            },
            Err(e) => Outcome::failed(format!("SMTP: {}", super::chain(&e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let s = parse_server("smtp://alerts%40bureau.example@mail.example").unwrap();
        assert_eq!(
            s,
            Server {
                host: "mail.example".into(),
                port: 587,
                security: Security::Starttls,
                user: Some("alerts@bureau.example".into()),
            }
        );
        let s = parse_server("smtps://mail.example").unwrap();
        assert_eq!(
            (s.port, s.security, s.user),
            (465, Security::Implicit, None)
        );
        let s = parse_server("smtp://127.0.0.1:2525?tls=none").unwrap();
        assert_eq!((s.port, s.security), (2525, Security::None));
        assert!(parse_server("smtp://mail.example:25?tls=none")
            .unwrap_err()
            .contains("loopback"));
        assert!(parse_server("smtp://u:pw@mail.example")
            .unwrap_err()
            .contains("--secret-file"));
        assert!(parse_server("http://mail.example").is_err());
    }

    #[test]
    fn addresses() {
        assert!(mailbox("环保局 <alerts@bureau.example>").is_ok());
        assert!(mailbox("not an address").is_err());
        assert!(Mailer::build(
            "smtp://127.0.0.1:2525?tls=none",
            "soilmon@example.org",
            &[],
            None,
            Duration::from_secs(1),
            None
        )
        .is_err());
    }
}
