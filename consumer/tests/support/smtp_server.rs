//! A real SMTP server on 127.0.0.1 for tests: it speaks enough of RFC 5321 for a mail client
//! (EHLO/HELO, STARTTLS, AUTH PLAIN and LOGIN, MAIL, RCPT, DATA with dot-unstuffing, RSET,
//! NOOP, QUIT), over plain TCP, STARTTLS or implicit TLS with a certificate made by
//! [`TestPki`], and records every message it accepts. Recipients can be rejected one by one
//! (550), the server can be taken down (connections refused) and brought back on the same port.
//!
//! ```ignore
//! let mut smtp = SmtpServer::start(SmtpOptions::default()).await;
//! // configure Butler.emailNotification.smtp with smtp.port() …
//! let mail = smtp.mail().await;          // waits for the next accepted message
//! assert_eq!(mail.to, ["ops@example.com"]);
//! assert!(mail.part("text/html").unwrap().contains("Sales"));
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

const WAIT: Duration = Duration::from_secs(30);

/// A test CA and a server certificate it signed for `localhost` and `127.0.0.1`.
pub struct TestPki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    server_cert_der: rustls_pki_types::CertificateDer<'static>,
    server_key_der: Vec<u8>,
}

impl TestPki {
    pub fn generate() -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "consumer test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let key = rcgen::KeyPair::generate().expect("server key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        Self {
            ca_pem: ca_cert.pem(),
            server_cert_pem: cert.pem(),
            server_cert_der: cert.der().clone(),
            server_key_der: key.serialize_der(),
        }
    }

    fn acceptor(&self) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![self.server_cert_der.clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(self.server_key_der.clone().into()),
            )
            .expect("server certificate and key");
        TlsAcceptor::from(Arc::new(config))
    }
}

/// How the server behaves.
#[derive(Clone, Default)]
pub struct SmtpOptions {
    /// Offer STARTTLS with this certificate.
    pub starttls: Option<Arc<TestPki>>,
    /// Speak TLS from the first byte (SMTPS) with this certificate.
    pub implicit_tls: Option<Arc<TestPki>>,
    /// Require AUTH with this user and password before MAIL.
    pub auth: Option<(String, String)>,
    /// Answer RCPT TO for these addresses (lower case) with 550.
    pub reject: Vec<String>,
    /// Listen on this address instead of 127.0.0.1 (a test of what happens with a server
    /// beyond this machine).
    pub bind: Option<std::net::IpAddr>,
}

/// One message the server accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    /// Envelope recipients (RCPT TO that were accepted).
    pub to: Vec<String>,
    /// The message as received, dots unstuffed, CRLF line ends.
    pub data: String,
    /// Whether the session was encrypted when DATA came.
    pub tls: bool,
    /// The user that authenticated, if any (the password is checked, not kept).
    pub auth_user: Option<String>,
}

/// Something the server saw, for tests that wait on events instead of sleeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpEvent {
    Rejected(String),
    AuthFailed(String),
    /// A TLS handshake the client gave up (e.g. it refused the certificate).
    TlsFailed,
}

struct Shared {
    options: SmtpOptions,
    mails: mpsc::UnboundedSender<Mail>,
    events: mpsc::UnboundedSender<SmtpEvent>,
    connections: Mutex<usize>,
    /// Lower-case addresses answered with 550; starts as [`SmtpOptions::reject`].
    reject: Mutex<HashSet<String>>,
}

pub struct SmtpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<tokio::task::JoinHandle<()>>,
    mails: mpsc::UnboundedReceiver<Mail>,
    events: mpsc::UnboundedReceiver<SmtpEvent>,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(task) = self.accept.take() {
            task.abort();
        }
    }
}

impl SmtpServer {
    pub async fn start(options: SmtpOptions) -> Self {
        let ip = options.bind.unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
        let listener = TcpListener::bind((ip, 0)).await.expect("bind SMTP");
        let addr = listener.local_addr().expect("SMTP address");
        let (mails_tx, mails) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let reject = options.reject.iter().map(|r| r.to_lowercase()).collect();
        let shared = Arc::new(Shared {
            reject: Mutex::new(reject),
            options,
            mails: mails_tx,
            events: events_tx,
            connections: Mutex::new(0),
        });
        let accept = Some(tokio::spawn(accept_loop(listener, Arc::clone(&shared))));
        Self {
            addr,
            shared,
            accept,
            mails,
            events,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops listening: connections are refused, as with a mail server that is down.
    pub fn stop(&mut self) {
        if let Some(task) = self.accept.take() {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        let listener = TcpListener::bind(self.addr).await.expect("rebind SMTP");
        self.accept = Some(tokio::spawn(accept_loop(
            listener,
            Arc::clone(&self.shared),
        )));
    }

    /// Replaces the addresses answered with 550.
    pub fn set_reject(&self, addresses: &[&str]) {
        *self.shared.reject.lock().unwrap_or_else(|e| e.into_inner()) =
            addresses.iter().map(|a| a.to_lowercase()).collect();
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        *self
            .shared
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The next accepted message.
    pub async fn mail(&mut self) -> Mail {
        tokio::time::timeout(WAIT, self.mails.recv())
            .await
            .ok()
            .flatten()
            .expect("the SMTP server receives a message")
    }

    /// Messages accepted so far, without waiting.
    pub fn drain(&mut self) -> Vec<Mail> {
        let mut out = Vec::new();
        while let Ok(mail) = self.mails.try_recv() {
            out.push(mail);
        }
        out
    }

    /// The next event (rejected recipient, failed login, failed handshake).
    pub async fn event(&mut self) -> SmtpEvent {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .ok()
            .flatten()
            .expect("an SMTP event")
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        *shared.connections.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        tokio::spawn(connection(tcp, Arc::clone(&shared)));
    }
}

async fn connection(tcp: TcpStream, shared: Arc<Shared>) {
    if let Some(pki) = shared.options.implicit_tls.clone() {
        match pki.acceptor().accept(tcp).await {
            Ok(tls) => {
                let _ = session(tls, &shared, true, true).await;
            }
            Err(_) => {
                let _ = shared.events.send(SmtpEvent::TlsFailed);
            }
        }
        return;
    }
    let Some(tcp) = session(tcp, &shared, false, true).await else {
        return;
    };
    // STARTTLS was accepted: the same TCP connection continues encrypted, without a greeting.
    let Some(pki) = shared.options.starttls.clone() else {
        return;
    };
    match pki.acceptor().accept(tcp).await {
        Ok(tls) => {
            let _ = session(tls, &shared, true, false).await;
        }
        Err(_) => {
            let _ = shared.events.send(SmtpEvent::TlsFailed);
        }
    }
}

async fn reply<S: AsyncWrite + Unpin>(stream: &mut S, text: &str) -> bool {
    stream.write_all(text.as_bytes()).await.is_ok() && stream.flush().await.is_ok()
}

/// One SMTP session over `stream`. Returns the stream when the client asked for STARTTLS.
async fn session<S>(stream: S, shared: &Shared, tls: bool, greet: bool) -> Option<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let options = &shared.options;
    let mut reader = BufReader::new(stream);
    if greet && !reply(reader.get_mut(), "220 localhost ESMTP consumer-test\r\n").await {
        return None;
    }
    let mut auth_user: Option<String> = None;
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let command = line.trim_end_matches(['\r', '\n']).to_owned();
        let upper = command.to_ascii_uppercase();
        let answer: String = if upper.starts_with("EHLO") {
            let mut text = String::from("250-localhost greets you\r\n");
            if options.starttls.is_some() && !tls {
                text.push_str("250-STARTTLS\r\n");
            }
            if options.auth.is_some() {
                text.push_str("250-AUTH PLAIN LOGIN\r\n");
            }
            text.push_str("250-8BITMIME\r\n250 SIZE 10485760\r\n");
            text
        } else if upper.starts_with("HELO") {
            "250 localhost\r\n".into()
        } else if upper == "STARTTLS" {
            if options.starttls.is_some() && !tls {
                if !reply(reader.get_mut(), "220 2.0.0 Ready to start TLS\r\n").await {
                    return None;
                }
                return Some(reader.into_inner());
            }
            "502 5.5.1 STARTTLS not available\r\n".into()
        } else if upper.starts_with("AUTH ") {
            let Some((user, password)) = &options.auth else {
                if !reply(reader.get_mut(), "502 5.5.1 AUTH not available\r\n").await {
                    return None;
                }
                continue;
            };
            let parts: Vec<&str> = command.split_whitespace().collect();
            let mechanism = parts.get(1).map(|m| m.to_ascii_uppercase());
            let given = match mechanism.as_deref() {
                Some("PLAIN") => {
                    let initial = match parts.get(2) {
                        Some(initial) => (*initial).to_owned(),
                        None => {
                            if !reply(reader.get_mut(), "334 \r\n").await {
                                return None;
                            }
                            read_line(&mut reader).await?
                        }
                    };
                    decode(&initial).and_then(|plain| {
                        let mut fields = plain.split('\0').skip(1);
                        Some((fields.next()?.to_owned(), fields.next()?.to_owned()))
                    })
                }
                Some("LOGIN") => {
                    let user = match parts.get(2) {
                        Some(user) => decode(user),
                        None => {
                            if !reply(reader.get_mut(), "334 VXNlcm5hbWU6\r\n").await {
                                return None;
                            }
                            decode(&read_line(&mut reader).await?)
                        }
                    };
                    if !reply(reader.get_mut(), "334 UGFzc3dvcmQ6\r\n").await {
                        return None;
                    }
                    let password = decode(&read_line(&mut reader).await?);
                    user.zip(password)
                }
                _ => None,
            };
            match given {
                Some((u, p)) if &u == user && &p == password => {
                    auth_user = Some(u);
                    "235 2.7.0 Authentication successful\r\n".into()
                }
                other => {
                    let _ = shared.events.send(SmtpEvent::AuthFailed(
                        other.map(|(u, _)| u).unwrap_or_default(),
                    ));
                    "535 5.7.8 Authentication credentials invalid\r\n".into()
                }
            }
        } else if upper.starts_with("MAIL FROM:") {
            if options.auth.is_some() && auth_user.is_none() {
                "530 5.7.0 Authentication required\r\n".into()
            } else {
                from = Some(address(&command["MAIL FROM:".len()..]));
                to.clear();
                "250 2.1.0 Ok\r\n".into()
            }
        } else if upper.starts_with("RCPT TO:") {
            let rcpt = address(&command["RCPT TO:".len()..]);
            if from.is_none() {
                "503 5.5.1 MAIL first\r\n".into()
            } else if shared
                .reject
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&rcpt.to_lowercase())
            {
                let _ = shared.events.send(SmtpEvent::Rejected(rcpt));
                "550 5.1.1 Mailbox unavailable\r\n".into()
            } else {
                to.push(rcpt);
                "250 2.1.5 Ok\r\n".into()
            }
        } else if upper == "DATA" {
            if from.is_none() || to.is_empty() {
                "503 5.5.1 No valid recipients\r\n".into()
            } else {
                if !reply(reader.get_mut(), "354 End data with <CR><LF>.<CR><LF>\r\n").await {
                    return None;
                }
                let mut data = String::new();
                loop {
                    let mut l = String::new();
                    match reader.read_line(&mut l).await {
                        Ok(0) | Err(_) => return None,
                        Ok(_) => {}
                    }
                    if l == ".\r\n" || l == ".\n" {
                        break;
                    }
                    data.push_str(l.strip_prefix('.').unwrap_or(&l));
                }
                let _ = shared.mails.send(Mail {
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut to),
                    data,
                    tls,
                    auth_user: auth_user.clone(),
                });
                "250 2.0.0 Ok: queued\r\n".into()
            }
        } else if upper == "RSET" {
            from = None;
            to.clear();
            "250 2.0.0 Ok\r\n".into()
        } else if upper == "NOOP" {
            "250 2.0.0 Ok\r\n".into()
        } else if upper == "QUIT" {
            let _ = reply(reader.get_mut(), "221 2.0.0 Bye\r\n").await;
            return None;
        } else {
            "502 5.5.2 Command not recognized\r\n".into()
        };
        if !reply(reader.get_mut(), &answer).await {
            return None;
        }
    }
}

async fn read_line<S: AsyncRead + Unpin>(reader: &mut BufReader<S>) -> Option<String> {
    let mut line = String::new();
    match reader.read_line(&mut line).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end().to_owned()),
    }
}

fn decode(b64: &str) -> Option<String> {
    B64.decode(b64.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

/// `<a@b> SIZE=123` → `a@b`.
fn address(arg: &str) -> String {
    let arg = arg.trim();
    let inner = arg
        .strip_prefix('<')
        .and_then(|rest| rest.split_once('>'))
        .map(|(inner, _)| inner)
        .unwrap_or_else(|| arg.split_whitespace().next().unwrap_or_default());
    inner.to_owned()
}

// ---------------------------------------------------------------- reading what arrived

impl Mail {
    /// The header block, unfolded: one `(name, raw value)` per header.
    pub fn headers(&self) -> Vec<(String, String)> {
        headers_of(self.data.split("\r\n\r\n").next().unwrap_or_default())
    }

    /// Raw header lines exactly as sent (to check nothing was injected).
    pub fn header_block(&self) -> &str {
        self.data.split("\r\n\r\n").next().unwrap_or_default()
    }

    /// A header's value with RFC 2047 encoded words decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers()
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| decode_words(&v))
    }

    /// The decoded body of the first part with this content type (e.g. `text/html`).
    pub fn part(&self, content_type: &str) -> Option<String> {
        let (head, body) = self.data.split_once("\r\n\r\n")?;
        find_part(&headers_of(head), body, content_type)
    }
}

fn headers_of(block: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in block.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = out.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    out
}

fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn find_part(headers: &[(String, String)], body: &str, wanted: &str) -> Option<String> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let content_type = get("Content-Type").unwrap_or_else(|| "text/plain".into());
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if mime.starts_with("multipart/") {
        let boundary = param(&content_type, "boundary")?;
        let delimiter = format!("--{boundary}");
        for section in body.split(delimiter.as_str()).skip(1) {
            if section.starts_with("--") {
                break;
            }
            let section = section.strip_prefix("\r\n").unwrap_or(section);
            let (head, content) = section.split_once("\r\n\r\n")?;
            let content = content.strip_suffix("\r\n").unwrap_or(content);
            if let Some(found) = find_part(&headers_of(head), content, wanted) {
                return Some(found);
            }
        }
        return None;
    }
    if mime != wanted {
        return None;
    }
    let encoding = get("Content-Transfer-Encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "base64" => B64
            .decode(body.split_whitespace().collect::<String>())
            .ok()?,
        "quoted-printable" => quoted_printable(body),
        _ => body.as_bytes().to_vec(),
    };
    String::from_utf8(bytes).ok()
}

fn quoted_printable(text: &str) -> Vec<u8> {
    let bytes = text.replace("=\r\n", "").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// RFC 2047: `=?utf-8?b?…?=` and `=?utf-8?q?…?=` words; white space between two encoded words
/// is dropped.
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, after) = rest.split_at(start);
        let word = after[2..].splitn(3, '?').collect::<Vec<_>>();
        let decoded = match word.as_slice() {
            [charset, encoding, tail] => tail.find("?=").and_then(|end| {
                let text = &tail[..end];
                let bytes = match encoding.to_ascii_lowercase().as_str() {
                    "b" => B64.decode(text).ok()?,
                    "q" => quoted_printable(&text.replace('_', " ")),
                    _ => return None,
                };
                let consumed = 2 + charset.len() + 1 + encoding.len() + 1 + end + 2;
                Some((String::from_utf8_lossy(&bytes).into_owned(), consumed))
            }),
            _ => None,
        };
        match decoded {
            Some((text, consumed)) => {
                if !(last_was_word && before.trim().is_empty()) {
                    out.push_str(before);
                }
                out.push_str(&text);
                rest = &after[consumed..];
                last_was_word = true;
            }
            None => {
                out.push_str(before);
                out.push_str("=?");
                rest = &after[2..];
                last_was_word = false;
            }
        }
    }
    out.push_str(rest);
    out
}
