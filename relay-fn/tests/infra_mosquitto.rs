//! The shipped broker set-up, checked end to end: `infra/tls/make-test-ca.sh` makes the CA and
//! certificates, `mosquitto_passwd` the users, and Mosquitto runs from `infra/mosquitto/
//! mosquitto.conf` and `infra/mosquitto/acl` with only paths and the port substituted. Real MQTT
//! clients (and the real relay binary) then check what the files promise: TLS only, no anonymous
//! or wrong-password logins, the relay may only publish to `qscloud/#`, the consumer may only read
//! it, and a persistent session's QoS 1 messages survive a broker restart.
//!
//! Skipped (with a message) when `mosquitto`, `mosquitto_passwd` or `openssl` is not installed;
//! CI installs them. Every wait is bounded and waits for an event, never for time to pass: a
//! "nothing arrived" check is a round trip on the same connection (UNSUBSCRIBE → UNSUBACK),
//! which the broker answers only after anything it had queued for that client.
//!
//! The broker passwords are made up per run and masked in every assertion message.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Process, WAIT};
use qlik_events::mqtt::{ClientOptions, MqttClient, MqttEvent, Session};
use qlik_events::{BrokerSettings, MqttVersion, TlsSettings};
use secrecy::SecretString;
use tokio::sync::mpsc;

const RELAY: &str = "relay";
const CONSUMER: &str = "consumer";
const APP_RELOAD_TOPIC: &str = "qscloud/app/reload/T1";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The programs the set-up needs, or `None` (and a message) when one is missing.
fn tools() -> Option<(PathBuf, PathBuf)> {
    let found = (
        find_program("mosquitto"),
        find_program("mosquitto_passwd"),
        find_program("openssl"),
    );
    match found {
        (Some(mosquitto), Some(passwd), Some(_openssl)) => Some((mosquitto, passwd)),
        _ => {
            eprintln!(
                "mosquitto, mosquitto_passwd or openssl not installed: skipping \
                 (apt-get install mosquitto mosquitto-clients openssl)"
            );
            None
        }
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Runs `infra/tls/make-test-ca.sh [--client NAME]... DIR [HOST]...`; returns what it printed.
fn make_test_ca(dir: &Path, clients: &[&str], hosts: &[&str]) -> String {
    let script = repo_root().join("infra/tls/make-test-ca.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(clients.iter().flat_map(|name| ["--client", name]))
        .arg(dir)
        .args(hosts)
        .output()
        .expect("run make-test-ca.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "make-test-ca.sh failed:\n{text}");
    text
}

/// `template` with every `(from, to, count)` replaced, each found exactly `count` times, so a
/// change to the shipped file that the test no longer matches fails loudly instead of testing
/// something else.
fn substitute(template: &str, replacements: &[(&str, String, usize)]) -> String {
    let mut text = template.to_owned();
    for (from, to, count) in replacements {
        assert_eq!(
            text.matches(from).count(),
            *count,
            "infra/mosquitto/mosquitto.conf: expected `{from}` {count} time(s)"
        );
        text = text.replace(from, to);
    }
    text
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Auth {
    /// As shipped: user name and password over TLS.
    Passwords,
    /// The file's documented mutual-TLS alternative: client certificate, CN = user name.
    ClientCertificates,
}

/// Mosquitto running from the shipped files, in a temporary directory.
struct InfraBroker {
    /// Holds the temporary directory (certificates, passwords, ACL, database) until the end.
    _dir: tempfile::TempDir,
    mosquitto: PathBuf,
    config: PathBuf,
    port: u16,
    certs: PathBuf,
    relay_password: String,
    consumer_password: String,
    process: Option<Process>,
}

impl InfraBroker {
    async fn start(auth: Auth) -> Option<InfraBroker> {
        let (mosquitto, passwd) = tools()?;
        let dir = tempfile::tempdir().expect("temp dir");
        // Mosquitto started as root drops to the `mosquitto` user before it opens its files,
        // as in production (where they are root:mosquitto 0640); here they are test files.
        chmod(dir.path(), 0o755);
        let certs = dir.path().join("certs");
        make_test_ca(&certs, &[RELAY, CONSUMER], &[]);
        chmod(&certs, 0o755);
        chmod(&certs.join("server.key"), 0o644);

        let relay_password = testkit::unique("relay-pw");
        let consumer_password = testkit::unique("consumer-pw");
        let password_file = dir.path().join("passwd");
        for (i, (user, password)) in [(RELAY, &relay_password), (CONSUMER, &consumer_password)]
            .into_iter()
            .enumerate()
        {
            let mut command = Command::new(&passwd);
            command.arg("-b");
            if i == 0 {
                command.arg("-c");
            }
            let made = command
                .arg(&password_file)
                .arg(user)
                .arg(password)
                .output()
                .expect("run mosquitto_passwd");
            assert!(made.status.success(), "mosquitto_passwd failed for {user}");
        }
        chmod(&password_file, 0o644);

        let acl = dir.path().join("acl");
        std::fs::copy(repo_root().join("infra/mosquitto/acl"), &acl).expect("copy the ACL");
        chmod(&acl, 0o644);
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        chmod(&data, 0o777);

        let port = common::free_port();
        let template = std::fs::read_to_string(repo_root().join("infra/mosquitto/mosquitto.conf"))
            .expect("read infra/mosquitto/mosquitto.conf");
        let mut replacements = vec![
            (
                "\nlistener 8883\n",
                format!("\nlistener {port} 127.0.0.1\n"),
                1,
            ),
            (
                "\ncertfile /etc/mosquitto/certs/server.crt\n",
                format!("\ncertfile {}\n", certs.join("server.crt").display()),
                1,
            ),
            (
                "\nkeyfile /etc/mosquitto/certs/server.key\n",
                format!("\nkeyfile {}\n", certs.join("server.key").display()),
                1,
            ),
            (
                "\ncafile /etc/mosquitto/certs/ca.crt\n",
                format!("\ncafile {}\n", certs.join("ca.crt").display()),
                1,
            ),
            (
                "\npassword_file /etc/mosquitto/passwd\n",
                format!("\npassword_file {}\n", password_file.display()),
                1,
            ),
            (
                "\nacl_file /etc/mosquitto/acl\n",
                format!("\nacl_file {}\n", acl.display()),
                1,
            ),
            (
                "\npersistence_location /var/lib/mosquitto/\n",
                format!("\npersistence_location {}/\n", data.display()),
                1,
            ),
        ];
        if auth == Auth::ClientCertificates {
            replacements.push((
                "\nrequire_certificate false\n",
                "\nrequire_certificate true\n".to_owned(),
                1,
            ));
            replacements.push((
                "\nuse_identity_as_username false\n",
                "\nuse_identity_as_username true\n".to_owned(),
                1,
            ));
        }
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(&config, substitute(&template, &replacements)).expect("write config");

        let mut broker = InfraBroker {
            _dir: dir,
            mosquitto,
            config,
            port,
            certs,
            relay_password,
            consumer_password,
            process: None,
        };
        broker.run().await;
        Some(broker)
    }

    fn secrets(&self) -> [&str; 2] {
        [&self.relay_password, &self.consumer_password]
    }

    /// Starts Mosquitto and waits for its "running" line (printed once the listener is open).
    async fn run(&mut self) {
        let config = self.config.to_string_lossy().into_owned();
        let mut process = common::spawn(&self.mosquitto, &["-c", &config], &common::base_env());
        process
            .wait_until("Mosquitto running", |line| {
                line.contains("mosquitto version") && line.ends_with("running")
            })
            .await;
        self.process = Some(process);
    }

    /// A clean shutdown (SIGTERM, as `systemctl restart` does), waiting for the exit.
    async fn stop(&mut self) {
        let mut process = self.process.take().expect("broker running");
        let pid = process.child.id().expect("broker pid");
        let killed = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(killed.success(), "kill -TERM {pid}");
        let secrets = self.secrets();
        let status = process.wait_exit(&secrets).await;
        assert!(
            status.success(),
            "Mosquitto exits cleanly on SIGTERM: {status}\n{}",
            process.output_redacted(&secrets)
        );
    }

    fn log(&self) -> String {
        self.process
            .as_ref()
            .map(|p| p.output_redacted(&self.secrets()))
            .unwrap_or_default()
    }

    fn password(&self, user: &str) -> String {
        match user {
            RELAY => self.relay_password.clone(),
            CONSUMER => self.consumer_password.clone(),
            _ => "no-such-user-password".to_owned(),
        }
    }

    /// Connection settings the way the relay and the consumer build them: `mqtts://user@localhost`
    /// (the certificate's name), trusting the test CA.
    fn settings(
        &self,
        user: Option<&str>,
        password: Option<String>,
        client_id: &str,
    ) -> BrokerSettings {
        let user = user.map(|u| format!("{u}@")).unwrap_or_default();
        let url = format!("mqtts://{user}localhost:{}", self.port);
        let mut settings = BrokerSettings::from_url(&url, client_id).expect("broker URL");
        settings.password = password.map(SecretString::from);
        settings.tls = Some(TlsSettings {
            ca_file: Some(self.certs.join("ca.crt")),
            ..TlsSettings::default()
        });
        settings
    }

    /// `user` with its password (MQTT 3.1.1 unless `version` says otherwise).
    async fn login(&self, user: &str, version: MqttVersion) -> Client {
        let mut settings = self.settings(Some(user), Some(self.password(user)), &client_id(user));
        settings.version = version;
        Client::connect(&settings, true)
            .await
            .unwrap_or_else(|e| panic!("{user} cannot log in: {e:?}\n{}", self.log()))
    }

    /// `user` by its client certificate (mutual-TLS variant), no password.
    async fn login_with_certificate(
        &self,
        user: &str,
        version: MqttVersion,
    ) -> Result<Client, Refusal> {
        let mut settings = self.settings(None, None, &client_id(user));
        settings.version = version;
        let read = |name: String| {
            std::fs::read_to_string(self.certs.join(&name))
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        settings.tls = Some(if user == RELAY {
            // The relay in Lambda gets its CA and device certificate as PEM text from Secrets
            // Manager (mqttCaCert, mqttClientCert, mqttClientKey): exercise that path.
            TlsSettings {
                ca_pem: Some(read("ca.crt".into())),
                client_identity_pem: Some(qlik_events::ClientIdentityPem {
                    certificate: read(format!("client-{user}.crt")),
                    key: read(format!("client-{user}.key")).into(),
                }),
                ..TlsSettings::default()
            }
        } else {
            TlsSettings {
                ca_file: Some(self.certs.join("ca.crt")),
                client_cert: Some(self.certs.join(format!("client-{user}.crt"))),
                client_key: Some(self.certs.join(format!("client-{user}.key"))),
                ..TlsSettings::default()
            }
        });
        Client::connect(&settings, true).await
    }
}

fn client_id(user: &str) -> String {
    // Short enough for any MQTT 3.1.1 broker's 23-character rule of thumb is not needed by
    // Mosquitto; unique so parallel tests never take over each other's connection.
    testkit::unique(&format!("infra-{user}"))
}

/// What a test client saw, in arrival order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Connected {
        session_present: bool,
    },
    Publish {
        topic: String,
        payload: Vec<u8>,
    },
    /// Per filter: granted (true) or refused (false).
    SubAck(Vec<bool>),
    UnsubAck,
    /// MQTT 5 carries a reason (`Success`, `NoMatchingSubscribers`, `NotAuthorized`, …).
    PubAck(Option<String>),
    Closed(String),
}

/// Why a connection did not come up.
#[derive(Debug, Clone, PartialEq)]
enum Refusal {
    /// The broker answered CONNACK with this return code.
    ConnAck(String),
    /// TLS, TCP or protocol failure before any CONNACK.
    Transport(String),
}

/// A connected MQTT client whose event loop runs in a task; events come back in order.
struct Client {
    handle: MqttClient,
    rx: mpsc::UnboundedReceiver<Seen>,
    /// Publishes that arrived while waiting for something else.
    inbox: VecDeque<(String, Vec<u8>)>,
    /// From the CONNACK: the broker still had this client id's persistent session.
    session_present: bool,
}

impl Client {
    /// Connects and waits for the CONNACK. The event loop stops at the first error (no
    /// automatic reconnect), so a refused or broken connection shows as such.
    async fn connect(settings: &BrokerSettings, clean_session: bool) -> Result<Client, Refusal> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let session = Session {
            clean_session,
            expiry: (!clean_session).then_some(Duration::from_secs(3600)),
        };
        let (handle, mut eventloop) = MqttClient::new(
            settings,
            ClientOptions {
                session,
                ..ClientOptions::default()
            },
        )
        .expect("MQTT options");
        tokio::spawn(async move {
            loop {
                let seen = match eventloop.poll().await {
                    Ok(MqttEvent::ConnAck { session_present }) => {
                        Seen::Connected { session_present }
                    }
                    Ok(MqttEvent::Publish(p)) => Seen::Publish {
                        topic: p.topic,
                        payload: p.payload.to_vec(),
                    },
                    Ok(MqttEvent::SubAck(codes)) => {
                        Seen::SubAck(codes.iter().map(Result::is_ok).collect())
                    }
                    Ok(MqttEvent::UnsubAck) => Seen::UnsubAck,
                    Ok(MqttEvent::PubAck(ack)) => Seen::PubAck(ack.reason),
                    Ok(MqttEvent::DisconnectSent) => {
                        let _ = tx.send(Seen::Closed("disconnected".to_owned()));
                        break;
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send(Seen::Closed(match e.connack_refusal() {
                            Some(code) => format!("refused: {code}"),
                            None => format!("error: {e}"),
                        }));
                        break;
                    }
                };
                if tx.send(seen).is_err() {
                    break;
                }
            }
        });
        let first = tokio::time::timeout(WAIT, rx.recv())
            .await
            .map_err(|_| Refusal::Transport(format!("no CONNACK within {WAIT:?}")))?;
        match first {
            Some(Seen::Connected { session_present }) => Ok(Client {
                handle,
                rx,
                inbox: VecDeque::new(),
                session_present,
            }),
            Some(Seen::Closed(reason)) => Err(match reason.strip_prefix("refused: ") {
                Some(code) => Refusal::ConnAck(code.to_owned()),
                None => Refusal::Transport(reason),
            }),
            other => Err(Refusal::Transport(format!(
                "unexpected first event {other:?}"
            ))),
        }
    }

    /// The next event that is not a PUBLISH (publishes are kept for `next_publish`).
    async fn next_control(&mut self, what: &str) -> Seen {
        loop {
            let seen = tokio::time::timeout(WAIT, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
                .unwrap_or_else(|| panic!("connection ended before {what}"));
            match seen {
                Seen::Publish { topic, payload } => self.inbox.push_back((topic, payload)),
                Seen::Closed(reason) => panic!("connection closed before {what}: {reason}"),
                other => return other,
            }
        }
    }

    /// Subscribes with QoS 1; per filter, whether the broker granted it.
    async fn subscribe(&mut self, filter: &str) -> Vec<bool> {
        self.handle
            .subscribe_qos1(filter)
            .await
            .expect("queue SUBSCRIBE");
        match self.next_control("SUBACK").await {
            Seen::SubAck(granted) => granted,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Publishes with QoS 1 and waits for the PUBACK; MQTT 5 returns its reason.
    async fn publish(&mut self, topic: &str, payload: &[u8]) -> Option<String> {
        self.handle
            .publish_qos1(topic, payload.to_vec(), false)
            .await
            .expect("queue PUBLISH");
        match self.next_control("PUBACK").await {
            Seen::PubAck(reason) => reason,
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }

    /// A round trip on this connection: once the UNSUBACK is here, so is every PUBLISH that the
    /// broker had queued for this client before it handled the UNSUBSCRIBE.
    async fn round_trip(&mut self) {
        let filter = "infra-test/round-trip";
        self.handle
            .unsubscribe(filter)
            .await
            .expect("queue UNSUBSCRIBE");
        match self.next_control("UNSUBACK").await {
            Seen::UnsubAck => {}
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
    }

    /// The next PUBLISH that arrives (bounded by [`WAIT`]).
    async fn next_publish(&mut self) -> (String, Vec<u8>) {
        if let Some(message) = self.inbox.pop_front() {
            return message;
        }
        loop {
            let seen = tokio::time::timeout(WAIT, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no message arrived within {WAIT:?}"))
                .expect("connection ended while waiting for a message");
            match seen {
                Seen::Publish { topic, payload } => return (topic, payload),
                Seen::Closed(reason) => panic!("connection closed while waiting: {reason}"),
                _ => {}
            }
        }
    }

    /// Every PUBLISH that arrived so far, after a round trip (see [`Client::round_trip`]).
    async fn received_so_far(&mut self) -> Vec<(String, Vec<u8>)> {
        self.round_trip().await;
        while let Ok(seen) = self.rx.try_recv() {
            if let Seen::Publish { topic, payload } = seen {
                self.inbox.push_back((topic, payload));
            }
        }
        self.inbox.drain(..).collect()
    }

    /// A clean DISCONNECT (a persistent session stays on the broker).
    async fn disconnect(mut self) {
        self.handle.disconnect().await.expect("queue DISCONNECT");
        loop {
            match tokio::time::timeout(WAIT, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no DISCONNECT within {WAIT:?}"))
            {
                Some(Seen::Closed(_)) | None => return,
                Some(_) => {}
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The certificate script
// ------------------------------------------------------------------------------------------------

/// `make-test-ca.sh` makes a CA, a server certificate for localhost/127.0.0.1 (+ extra names)
/// and client certificates; run again, it keeps all of them; with a new host name it reissues
/// only the server certificate, still under the same CA.
#[test]
fn make_test_ca_is_idempotent() {
    if find_program("openssl").is_none() {
        eprintln!("openssl not installed: skipping");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = dir.path().join("tls");
    let first = make_test_ca(&certs, &[RELAY], &[]);
    for file in [
        "ca.crt",
        "ca.key",
        "server.crt",
        "server.key",
        "client-relay.crt",
        "client-relay.key",
    ] {
        assert!(certs.join(file).is_file(), "{file} made:\n{first}");
    }
    assert_eq!(first.matches("made ").count(), 3, "{first}");
    assert!(
        first.contains("DNS:localhost, IP Address:127.0.0.1"),
        "{first}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["ca.key", "server.key", "client-relay.key"] {
            let mode = std::fs::metadata(certs.join(key))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{key} is private (mode {mode:o})");
        }
    }
    let ca_before = std::fs::read(certs.join("ca.crt")).expect("ca.crt");
    let server_before = std::fs::read(certs.join("server.crt")).expect("server.crt");

    let again = make_test_ca(&certs, &[RELAY], &[]);
    assert_eq!(
        again.matches("kept ").count(),
        3,
        "second run keeps everything:\n{again}"
    );
    assert!(!again.contains("made "), "{again}");
    assert_eq!(
        std::fs::read(certs.join("server.crt")).expect("server.crt"),
        server_before
    );

    let renamed = make_test_ca(&certs, &[RELAY], &["broker.example.test"]);
    assert!(
        renamed.contains("made  ") && renamed.contains("server.crt"),
        "{renamed}"
    );
    assert!(renamed.contains("DNS:broker.example.test"), "{renamed}");
    assert_eq!(
        std::fs::read(certs.join("ca.crt")).expect("ca.crt"),
        ca_before,
        "same CA"
    );
    assert_ne!(
        std::fs::read(certs.join("server.crt")).expect("server.crt"),
        server_before
    );
}

// ------------------------------------------------------------------------------------------------
// Mosquitto from infra/mosquitto: TLS, passwords, ACL
// ------------------------------------------------------------------------------------------------

/// The relay user publishes QoS 1 to the relay's topic (PUBACK), and the consumer user, subscribed
/// to Butler's default `qscloud/#`, receives it byte for byte, over TLS with the test CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_publishes_and_consumer_receives() {
    let Some(broker) = InfraBroker::start(Auth::Passwords).await else {
        return;
    };
    let mut consumer = broker.login(CONSUMER, MqttVersion::V311).await;
    assert_eq!(
        consumer.subscribe("qscloud/#").await,
        vec![true],
        "consumer may subscribe"
    );
    let mut relay = broker.login(RELAY, MqttVersion::V311).await;
    relay.publish(APP_RELOAD_TOPIC, b"{\"event\":1}").await;
    assert_eq!(
        consumer.next_publish().await,
        (APP_RELOAD_TOPIC.to_owned(), b"{\"event\":1}".to_vec())
    );

    // MQTT 5 says so explicitly: the relay's publish is authorized.
    let mut relay5 = broker.login(RELAY, MqttVersion::V5).await;
    let reason = relay5.publish("qscloud/event/x/T1", b"v5").await;
    assert_eq!(reason.as_deref(), Some("Success"), "{}", broker.log());
    assert_eq!(consumer.next_publish().await.0, "qscloud/event/x/T1");
}

/// The consumer user cannot publish into `qscloud/#`: with MQTT 3.1.1 Mosquitto acknowledges and
/// drops the message (the protocol has no way to say no), so a later legitimate message is the
/// first one a subscriber sees; with MQTT 5 the PUBACK says NotAuthorized. The consumer may
/// publish its alerts to `qscloud-alerts/#`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_cannot_publish_into_the_relay_topics() {
    let Some(broker) = InfraBroker::start(Auth::Passwords).await else {
        return;
    };
    let mut subscriber = broker.login(CONSUMER, MqttVersion::V311).await;
    assert_eq!(subscriber.subscribe("qscloud/#").await, vec![true]);

    let mut forger = broker.login(CONSUMER, MqttVersion::V311).await;
    assert_eq!(forger.publish(APP_RELOAD_TOPIC, b"forged").await, None);
    let mut forger5 = broker.login(CONSUMER, MqttVersion::V5).await;
    let reason = forger5.publish(APP_RELOAD_TOPIC, b"forged-v5").await;
    assert_eq!(reason.as_deref(), Some("NotAuthorized"), "{}", broker.log());

    // Published after the forged ones were acknowledged: if Mosquitto had delivered them, they
    // would have reached the subscriber first.
    let mut relay = broker.login(RELAY, MqttVersion::V311).await;
    relay.publish(APP_RELOAD_TOPIC, b"legit").await;
    assert_eq!(
        subscriber.next_publish().await,
        (APP_RELOAD_TOPIC.to_owned(), b"legit".to_vec()),
        "the consumer's own publishes never arrive"
    );
    assert_eq!(subscriber.received_so_far().await, vec![]);

    let reason = forger5.publish("qscloud-alerts/T1/app1", b"alert").await;
    assert!(
        matches!(reason.as_deref(), Some("Success" | "NoMatchingSubscribers")),
        "the consumer may publish its alerts to qscloud-alerts/#: {reason:?}"
    );
}

/// The relay user reads nothing: Mosquitto's acl_file does not refuse the SUBSCRIBE itself
/// (Mosquitto 2.0 grants it; a broker or plugin may answer 0x80), but it never delivers a
/// message to a client without read access. The relay cannot publish outside `qscloud/#`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_cannot_read_or_publish_elsewhere() {
    let Some(broker) = InfraBroker::start(Auth::Passwords).await else {
        return;
    };
    let mut consumer = broker.login(CONSUMER, MqttVersion::V311).await;
    assert_eq!(consumer.subscribe("qscloud/#").await, vec![true]);
    let mut snoop = broker.login(RELAY, MqttVersion::V311).await;
    let granted = snoop.subscribe("qscloud/#").await;
    eprintln!(
        "relay user's SUBSCRIBE qscloud/#: granted {granted:?} (delivery is what the ACL stops)"
    );
    let mut snoop_all = broker.login(RELAY, MqttVersion::V5).await;
    snoop_all.subscribe("#").await;

    let mut relay = broker.login(RELAY, MqttVersion::V311).await;
    relay
        .publish(APP_RELOAD_TOPIC, b"for the consumer only")
        .await;
    // The consumer has it, so Mosquitto has routed it to every subscriber already.
    assert_eq!(consumer.next_publish().await.1, b"for the consumer only");
    assert_eq!(
        snoop.received_so_far().await,
        vec![],
        "relay user received a message"
    );
    assert_eq!(
        snoop_all.received_so_far().await,
        vec![],
        "relay user received a message"
    );

    let mut relay5 = broker.login(RELAY, MqttVersion::V5).await;
    let reason = relay5.publish("elsewhere/T1", b"x").await;
    assert_eq!(reason.as_deref(), Some("NotAuthorized"), "{}", broker.log());
}

/// No login without the right password; no anonymous login; no plain MQTT on the TLS port; no
/// TLS without trusting the broker's CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_anonymous_and_plain_tcp_are_refused() {
    let Some(broker) = InfraBroker::start(Auth::Passwords).await else {
        return;
    };
    let wrong = broker.settings(
        Some(CONSUMER),
        Some("not-the-password".to_owned()),
        &client_id("wrong"),
    );
    let refused = Client::connect(&wrong, true).await.err();
    assert_eq!(
        refused,
        Some(Refusal::ConnAck("NotAuthorized".to_owned())),
        "wrong password"
    );

    let unknown = broker.settings(
        Some("mallory"),
        Some("whatever".to_owned()),
        &client_id("mallory"),
    );
    let refused = Client::connect(&unknown, true).await.err();
    assert_eq!(
        refused,
        Some(Refusal::ConnAck("NotAuthorized".to_owned())),
        "unknown user"
    );

    let anonymous = broker.settings(None, None, &client_id("anonymous"));
    let refused = Client::connect(&anonymous, true).await.err();
    assert_eq!(
        refused,
        Some(Refusal::ConnAck("NotAuthorized".to_owned())),
        "anonymous"
    );

    let mut plain = broker.settings(
        Some(CONSUMER),
        Some(broker.password(CONSUMER)),
        &client_id("plain"),
    );
    plain.tls = None;
    match Client::connect(&plain, true).await {
        Err(Refusal::Transport(reason)) => eprintln!("plain TCP to the TLS port: {reason}"),
        Err(other) => panic!("plain TCP must fail before any CONNACK: {other:?}"),
        Ok(_) => panic!("plain MQTT was accepted on the TLS port"),
    }

    let mut untrusted = broker.settings(
        Some(CONSUMER),
        Some(broker.password(CONSUMER)),
        &client_id("untrusted"),
    );
    untrusted.tls = Some(TlsSettings::default()); // system roots only: the test CA is unknown
    if untrusted.rustls_config().is_ok() {
        match Client::connect(&untrusted, true).await {
            Err(Refusal::Transport(reason)) => {
                assert!(
                    reason.contains("TLS") || reason.to_lowercase().contains("certificate"),
                    "{reason}"
                )
            }
            other => panic!(
                "a client that does not trust the test CA must fail TLS: {:?}",
                other.err()
            ),
        }
    }
}

/// A persistent-session consumer that is away while the relay publishes gets the message when it
/// comes back, even though the broker was restarted in between (persistence on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_message_survives_a_broker_restart() {
    let Some(mut broker) = InfraBroker::start(Auth::Passwords).await else {
        return;
    };
    let consumer = broker.settings(
        Some(CONSUMER),
        Some(broker.password(CONSUMER)),
        &testkit::unique("infra-persistent"),
    );
    let mut session = Client::connect(&consumer, false)
        .await
        .expect("consumer connects");
    assert_eq!(session.subscribe("qscloud/#").await, vec![true]);
    session.disconnect().await;

    let mut relay = broker.login(RELAY, MqttVersion::V311).await;
    relay
        .publish(APP_RELOAD_TOPIC, b"while the consumer was away")
        .await;
    relay.disconnect().await;

    broker.stop().await;
    broker.run().await;

    let mut session = Client::connect(&consumer, false)
        .await
        .unwrap_or_else(|e| panic!("consumer reconnects: {e:?}\n{}", broker.log()));
    assert!(
        session.session_present,
        "the broker kept the session across the restart"
    );
    assert_eq!(
        session.next_publish().await,
        (
            APP_RELOAD_TOPIC.to_owned(),
            b"while the consumer was away".to_vec()
        ),
        "{}",
        broker.log()
    );
}

/// The real relay binary (HTTP mode) publishes a signed Qlik webhook through TLS as user `relay`
/// (200), and the consumer user receives the body byte for byte. With a topic root the ACL does
/// not allow, MQTT 5 lets the relay see the refusal (503); MQTT 3.1.1 cannot (200, and the
/// message is dropped), which is why the ACL comment says to keep the two in step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_relay_publishes_through_tls_and_the_acl() {
    let Some(broker) = InfraBroker::start(Auth::Passwords).await else {
        return;
    };
    let mut consumer = broker.login(CONSUMER, MqttVersion::V311).await;
    assert_eq!(consumer.subscribe("qscloud/#").await, vec![true]);

    let body = testkit::sample("app-reload-failed.cloudevents.json");
    let signature = testkit::signature(&body);
    let topic = common::expected_topic("qscloud", &body);
    let secrets = [
        broker.relay_password.as_str(),
        broker.consumer_password.as_str(),
    ];
    let cases: [(&str, Option<&str>, u16); 3] = [
        ("", None, 200),
        ("?version=5", Some("not-allowed"), 503),
        ("", Some("not-allowed"), 200),
    ];
    for (query, root, expected) in cases {
        let listen = common::free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], listen).into();
        let mut env = vec![
            (
                "MQTT_URL",
                format!("mqtts://relay@localhost:{}{query}", broker.port),
            ),
            (
                "MQTT_CA_FILE",
                broker.certs.join("ca.crt").display().to_string(),
            ),
            ("MQTT_PASSWORD", broker.relay_password.clone()),
            ("WEBHOOK_SECRET", testkit::TEST_SECRET.to_owned()),
            ("LISTEN_ADDR", addr.to_string()),
            ("PUBLISH_TIMEOUT_MS", "3000".to_owned()),
            // The sample carries a fixed 2026 time; its age is not what this test checks.
            ("MAX_EVENT_AGE_SECS", "0".to_owned()),
        ];
        if let Some(root) = root {
            env.push(("MQTT_TOPIC_ROOT", root.to_owned()));
        }
        let mut relay = common::relay(&env);
        relay.wait_for_port(addr, &secrets).await;
        let response = common::http_request(
            addr,
            "POST",
            "/",
            &[
                ("content-type", "application/json"),
                ("user-agent", "Qlik Webhook"),
                ("qlik-signature", &signature),
            ],
            &body,
        )
        .await;
        let case = format!("MQTT_URL …{query}, MQTT_TOPIC_ROOT {root:?}");
        assert_eq!(
            response.status,
            expected,
            "{case}: {}\n{}\n{}",
            String::from_utf8_lossy(&response.body),
            relay.output_redacted(&secrets),
            broker.log()
        );
        if root.is_none() {
            assert_eq!(response.json()["topic"], topic.as_str(), "{case}");
            let (got_topic, payload) = consumer.next_publish().await;
            assert_eq!(got_topic, topic, "{case}");
            assert!(payload == body, "{case}: the body arrives byte for byte");
        }
        let printed = relay.output_redacted(&[]);
        for secret in secrets {
            assert!(
                !printed.contains(secret),
                "{case}: the relay printed the broker password"
            );
        }
    }
    // Nothing from the refused topic root ever reached the consumer.
    assert_eq!(consumer.received_so_far().await, vec![]);
}

/// The file's mutual-TLS alternative (require_certificate + use_identity_as_username): the
/// client certificates from `make-test-ca.sh --client relay --client consumer` log in without
/// passwords, their CN is the user the ACL applies to, and a client without a certificate is
/// refused during the TLS handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_variant_maps_certificates_to_acl_users() {
    let Some(broker) = InfraBroker::start(Auth::ClientCertificates).await else {
        return;
    };
    let mut consumer = broker
        .login_with_certificate(CONSUMER, MqttVersion::V311)
        .await
        .unwrap_or_else(|e| panic!("consumer certificate: {e:?}\n{}", broker.log()));
    assert_eq!(consumer.subscribe("qscloud/#").await, vec![true]);
    let mut relay = broker
        .login_with_certificate(RELAY, MqttVersion::V5)
        .await
        .unwrap_or_else(|e| panic!("relay certificate: {e:?}\n{}", broker.log()));
    assert_eq!(
        relay.publish(APP_RELOAD_TOPIC, b"mtls").await.as_deref(),
        Some("Success")
    );
    assert_eq!(
        consumer.next_publish().await,
        (APP_RELOAD_TOPIC.to_owned(), b"mtls".to_vec())
    );

    let mut forger = broker
        .login_with_certificate(CONSUMER, MqttVersion::V5)
        .await
        .expect("consumer certificate (MQTT 5)");
    let reason = forger.publish(APP_RELOAD_TOPIC, b"forged").await;
    assert_eq!(
        reason.as_deref(),
        Some("NotAuthorized"),
        "CN=consumer is the consumer user"
    );

    let no_certificate = broker.settings(
        Some(CONSUMER),
        Some(broker.password(CONSUMER)),
        &client_id("nocert"),
    );
    match Client::connect(&no_certificate, true).await {
        Err(Refusal::Transport(reason)) => eprintln!("no client certificate: {reason}"),
        other => panic!(
            "a client without a certificate must be refused: {:?}",
            other.err()
        ),
    }
    assert_eq!(consumer.received_so_far().await, vec![]);
}
