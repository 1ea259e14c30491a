//! `cohort demo`, `cohort party`, `cohort enroll`, `cohort keygen`, `cohort sign`: FROST
//! through a relay.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cohort_client::Client;
use cohort_crypto::identity::IdentityKey;
use cohort_crypto::keystore::{KeyStore, KeyStoreSecret};
use cohort_server::Config;
use cohort_tss::runner::{Coordinator, PartyNode};
use cohort_tss::Curve;

/// The party id the coordinator commands log in with.
pub const COORDINATOR_ID: &str = "coordinator";

/// Checks a signature with a verifier that shares no code with FROST: ed25519-dalek for
/// Ed25519, k256's BIP-340 verifier for secp256k1-tr.
pub fn verify_independently(
    curve: Curve,
    group_public_key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    match curve {
        Curve::Ed25519 => {
            let key: [u8; 32] = group_public_key
                .try_into()
                .map_err(|_| "group key is not 32 bytes".to_string())?;
            let sig: [u8; 64] = signature
                .try_into()
                .map_err(|_| "signature is not 64 bytes".to_string())?;
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|e| e.to_string())?;
            vk.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&sig))
                .map_err(|e| e.to_string())
        }
        Curve::Secp256k1Tr => {
            let x_only = cohort_tss::bip340_public_key(group_public_key)
                .ok_or("group key is not a secp256k1 point")?;
            let vk = k256::schnorr::VerifyingKey::from_bytes(&x_only).map_err(|e| e.to_string())?;
            let sig = k256::schnorr::Signature::try_from(signature).map_err(|e| e.to_string())?;
            vk.verify_raw(message, &sig).map_err(|e| e.to_string())
        }
    }
}

fn phase(step: usize, of: usize, what: &str) -> Instant {
    eprintln!("[{step}/{of}] {what} ...");
    Instant::now()
}

fn done(start: Instant) -> Duration {
    let d = start.elapsed();
    eprintln!("      done in {:.1} ms", d.as_secs_f64() * 1000.0);
    d
}

pub struct DemoArgs {
    pub parties: u16,
    pub threshold: u16,
    pub curve: Curve,
}

/// Starts a relay, runs `parties` party nodes, a keygen and a signing, verifies, reports.
pub async fn demo(args: DemoArgs) -> Result<(), String> {
    if args.threshold < 2 || args.threshold > args.parties {
        return Err(format!(
            "--threshold {} must be between 2 and --parties {} (FROST needs at least 2 signers)",
            args.threshold, args.parties
        ));
    }
    let total = Instant::now();
    let dir =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let coordinator_key = IdentityKey::generate();

    let t = phase(
        1,
        5,
        "starting an embedded relay (temporary SQLite, loopback)",
    );
    let config = Config {
        data_dir: dir.path().join("relay"),
        grpc_addr: "127.0.0.1:0".parse().map_err(|_| "bad address")?,
        metrics_addr: None,
        coordinator_keys: vec![hex::encode(coordinator_key.public())],
        ..Config::default()
    };
    let running = cohort_server::start(config).await?;
    let url = format!("http://{}", running.grpc_addr);
    let t_relay = done(t);

    let t = phase(
        2,
        5,
        &format!(
            "enrolling and connecting {} parties over gRPC ({url})",
            args.parties
        ),
    );
    let trusted = vec![coordinator_key.public()];
    let coordinator = Coordinator::new(
        Client::connect(
            &url,
            COORDINATOR_ID,
            IdentityKey::from_bytes(&coordinator_key.to_bytes()),
        )
        .await
        .map_err(|e| e.to_string())?,
        coordinator_key,
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut names = Vec::new();
    let mut tasks = Vec::new();
    for i in 1..=args.parties {
        let name = format!("party-{i}");
        let node = connect_party(
            &url,
            &name,
            &dir.path().join(format!("{name}.keys")),
            &trusted,
            coordinator.client(),
        )
        .await?;
        let stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move { node.serve(stop).await }));
        names.push(name);
    }
    let t_connect = done(t);

    let t = phase(
        3,
        5,
        &format!(
            "keygen: FROST DKG, {}-of-{} on {}",
            args.threshold, args.parties, args.curve
        ),
    );
    let timeout = Duration::from_secs(120);
    let key = coordinator
        .keygen(&names, args.threshold, args.curve, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let t_keygen = done(t);

    let message = format!(
        "Cohort demo: {} parties, threshold {}",
        args.parties, args.threshold
    );
    let t = phase(
        4,
        5,
        &format!("signing {message:?} with {} signers", args.threshold),
    );
    let signed = coordinator
        .sign(
            &key.group_public_key,
            message.as_bytes(),
            "cohort demo",
            None,
            timeout,
        )
        .await
        .map_err(|e| e.to_string())?;
    let t_sign = done(t);

    let t = phase(5, 5, "verifying the signature with an independent verifier");
    let verdict = verify_independently(
        args.curve,
        &key.group_public_key,
        &signed.message_hash,
        &signed.signature,
    );
    let t_verify = done(t);

    let routed = running.relay.messages_routed();
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    running.shutdown().await?;

    let verifier = match args.curve {
        Curve::Ed25519 => "ed25519-dalek verify_strict",
        Curve::Secp256k1Tr => "k256 BIP-340 verify_raw",
    };
    println!();
    println!("  curve              {}", args.curve);
    println!(
        "  parties            {} (threshold {})",
        args.parties, args.threshold
    );
    println!("  signers            {}", signed.signers.join(", "));
    println!(
        "  group public key   {}",
        hex::encode(&key.group_public_key)
    );
    println!("  message            {message:?}");
    println!("  message hash       {}", hex::encode(signed.message_hash));
    println!("  signature          {}", hex::encode(&signed.signature));
    println!(
        "  verification       {} ({verifier})",
        if verdict.is_ok() { "VALID" } else { "INVALID" }
    );
    println!("  messages routed    {routed}");
    println!("  relay start        {:>8.1} ms", ms(t_relay));
    println!("  parties online     {:>8.1} ms", ms(t_connect));
    println!("  keygen             {:>8.1} ms", ms(t_keygen));
    println!("  signing            {:>8.1} ms", ms(t_sign));
    println!("  verification       {:>8.1} ms", ms(t_verify));
    println!("  total              {:>8.1} ms", ms(total.elapsed()));
    verdict.map_err(|e| format!("the signature did not verify: {e}"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Makes a party a fresh identity key, has `enroller` (a coordinator) enroll it, logs it in,
/// registers it, publishes its encryption key and opens its key store (a fresh one, for the
/// demo and the benchmarks).
pub(crate) async fn connect_party(
    url: &str,
    name: &str,
    keys: &Path,
    trusted: &[[u8; 32]],
    enroller: &Client,
) -> Result<PartyNode, String> {
    // A random key file (held in memory) encrypts the throwaway store: Argon2 on a
    // passphrase would cost more than a whole signing.
    let mut key_file = vec![0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key_file);
    let secret = KeyStoreSecret::KeyFile(key_file);
    let mut store = KeyStore::create(keys, &secret).map_err(|e| e.to_string())?;
    let identity = IdentityKey::generate();
    store
        .put("identity", &identity.to_bytes())
        .map_err(|e| e.to_string())?;
    enroller
        .enroll(name, &identity.public(), "persistent")
        .await
        .map_err(|e| e.to_string())?;
    start_party(url, name, identity, store, trusted).await
}

async fn start_party(
    url: &str,
    name: &str,
    identity: IdentityKey,
    mut store: KeyStore,
    trusted: &[[u8; 32]],
) -> Result<PartyNode, String> {
    let client = Client::connect(url, name, identity)
        .await
        .map_err(|e| e.to_string())?;
    client
        .register("persistent", env!("CARGO_PKG_VERSION"), None)
        .await
        .map_err(|e| e.to_string())?;
    // The encryption key lives in the key store, so sealed messages survive a restart.
    let enc = match store
        .get("encryption")
        .map(cohort_crypto::seal::EncryptionKeyPair::from_secret_bytes)
    {
        Some(Ok(k)) => k,
        _ => {
            let k = cohort_crypto::seal::EncryptionKeyPair::generate();
            store
                .put("encryption", k.secret_bytes().as_slice())
                .map_err(|e| e.to_string())?;
            k
        }
    };
    client
        .publish_encryption_key(&enc)
        .await
        .map_err(|e| e.to_string())?;
    client.spawn_heartbeat(Duration::from_secs(10));
    Ok(PartyNode::new(client, store, trusted.to_vec()))
}

/// Where a secret for a party's key store comes from.
pub fn keystore_secret(
    key_file: Option<&Path>,
    passphrase_env: &str,
) -> Result<KeyStoreSecret, String> {
    match key_file {
        Some(p) => KeyStoreSecret::from_key_file(p).map_err(|e| e.to_string()),
        None => match std::env::var(passphrase_env) {
            Ok(p) if !p.is_empty() => Ok(KeyStoreSecret::Passphrase(p)),
            _ => Err(format!(
                "no key store secret: set {passphrase_env} to a passphrase, or pass --key-file PATH"
            )),
        },
    }
}

/// Reads trusted coordinator keys: given hex keys, or the public half of a local
/// coordinator key file.
pub fn trusted_coordinators(hex_keys: &[String], key_file: &Path) -> Result<Vec<[u8; 32]>, String> {
    if !hex_keys.is_empty() {
        return hex_keys
            .iter()
            .map(|k| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(k, &mut out)
                    .map_err(|_| format!("--coordinator {k:?} is not 64 hex characters"))?;
                Ok(out)
            })
            .collect();
    }
    Ok(vec![load_coordinator_key(key_file)?.public()])
}

pub fn load_coordinator_key(path: &Path) -> Result<IdentityKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read coordinator key {}: {e}; `cohort serve` creates it in its data directory on first start, or pass --coordinator-key PATH",
            path.display()
        )
    })?;
    let mut secret = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut secret).map_err(|_| {
        format!(
            "{} does not hold a 64-hex-char Ed25519 secret key",
            path.display()
        )
    })?;
    Ok(IdentityKey::from_bytes(&secret))
}

pub struct PartyArgs {
    pub relay: String,
    pub party_id: String,
    pub key_store: PathBuf,
    pub key_file: Option<PathBuf>,
    pub passphrase_env: String,
    pub coordinators: Vec<String>,
    pub coordinator_key: PathBuf,
    /// Print the identity public key (hex) and exit, creating the key store if missing.
    pub print_identity: bool,
}

/// `cohort party`: a long-running party daemon.
pub async fn party(a: PartyArgs) -> Result<(), String> {
    let secret = keystore_secret(a.key_file.as_deref(), &a.passphrase_env)?;
    let store = if a.key_store.exists() {
        KeyStore::open(&a.key_store, &secret).map_err(|e| e.to_string())?
    } else {
        let mut s = KeyStore::create(&a.key_store, &secret).map_err(|e| e.to_string())?;
        s.put("identity", &IdentityKey::generate().to_bytes())
            .map_err(|e| e.to_string())?;
        eprintln!("created key store {}", a.key_store.display());
        s
    };
    let identity = match store.get("identity").map(<[u8; 32]>::try_from) {
        Some(Ok(b)) => IdentityKey::from_bytes(&b),
        _ => {
            return Err(format!(
                "key store {} holds no identity key",
                a.key_store.display()
            ))
        }
    };
    if a.print_identity {
        println!("{}", hex::encode(identity.public()));
        return Ok(());
    }
    let trusted = trusted_coordinators(&a.coordinators, &a.coordinator_key)?;
    // The operator enrolls this key before the relay admits it under the party id.
    tracing::info!(
        party = %a.party_id,
        identity_key = %hex::encode(identity.public()),
        "identity key (enroll it with `cohort enroll --party-id {} --key {}`)",
        a.party_id,
        hex::encode(identity.public())
    );
    let node = start_party(&a.relay, &a.party_id, identity, store, &trusted).await?;
    tracing::info!(party = %a.party_id, relay = %a.relay, "party online; waiting for sessions");
    let (tx, rx) = tokio::sync::watch::channel(false);
    let serving = tokio::spawn({
        let node = node.clone();
        async move { node.serve(rx).await }
    });
    cohort_server::serve::termination().await;
    let _ = tx.send(true);
    match serving.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

async fn coordinator(relay: &str, key_file: &Path) -> Result<Arc<Coordinator>, String> {
    let key = load_coordinator_key(key_file)?;
    let client = Client::connect(
        relay,
        COORDINATOR_ID,
        IdentityKey::from_bytes(&key.to_bytes()),
    )
    .await
    .map_err(|e| e.to_string())?;
    if !client.is_coordinator() {
        return Err(format!(
            "the key in {} is not a coordinator key of the relay at {relay}; list its public key {} in the relay's coordinator_keys",
            key_file.display(),
            hex::encode(key.public())
        ));
    }
    Ok(Arc::new(Coordinator::new(client, key)))
}

/// `cohort enroll`: as a coordinator, binds `party_id` to the Ed25519 key `key_hex` on the
/// relay, so that key alone may log in as it.
pub async fn enroll(
    relay: &str,
    key_file: &Path,
    party_id: &str,
    key_hex: &str,
    role: &str,
) -> Result<(), String> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(key_hex.trim(), &mut key).map_err(|_| {
        format!(
            "--key {key_hex:?} is not 64 hex characters (a party's Ed25519 identity public key; `cohort party` logs it at start)"
        )
    })?;
    let c = coordinator(relay, key_file).await?;
    let e = c
        .client()
        .enroll(party_id, &key, role)
        .await
        .map_err(|e| e.to_string())?;
    println!("party id           {}", e.party_id);
    println!("identity key       {}", hex::encode(&e.identity_key));
    println!(
        "role               {}",
        if e.role.is_empty() { "any" } else { &e.role }
    );
    println!("enrolled by        {}", e.enrolled_by);
    Ok(())
}

/// `cohort keygen`.
pub async fn keygen(
    relay: &str,
    key_file: &Path,
    parties: Vec<String>,
    t: u16,
    curve: Curve,
    timeout: Duration,
) -> Result<(), String> {
    let c = coordinator(relay, key_file).await?;
    let r = c
        .keygen(&parties, t, curve, timeout)
        .await
        .map_err(|e| e.to_string())?;
    println!("session            {}", r.session_id);
    println!("curve              {curve}");
    println!(
        "parties            {} (threshold {t})",
        r.parties.join(", ")
    );
    println!("group public key   {}", hex::encode(&r.group_public_key));
    Ok(())
}

/// `cohort sign`.
pub async fn sign(
    relay: &str,
    key_file: &Path,
    key_hex: &str,
    message: &str,
    signers: Option<Vec<String>>,
    timeout: Duration,
) -> Result<(), String> {
    let gpk = hex::decode(key_hex).map_err(|_| format!("--key {key_hex:?} is not hex"))?;
    let c = coordinator(relay, key_file).await?;
    let (_, _, curve) = c.key_info(&gpk).await.map_err(|e| e.to_string())?;
    let r = c
        .sign(&gpk, message.as_bytes(), message, signers, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let verdict = verify_independently(curve, &gpk, &r.message_hash, &r.signature);
    println!("session            {}", r.session_id);
    println!("signers            {}", r.signers.join(", "));
    println!("message hash       {}", hex::encode(r.message_hash));
    println!("signature          {}", hex::encode(&r.signature));
    println!(
        "verification       {}",
        if verdict.is_ok() { "VALID" } else { "INVALID" }
    );
    verdict.map_err(|e| format!("the signature did not verify: {e}"))
}
