//! Enrollment: party ids are bound to keys before anyone logs in, and sessions admit only the
//! key they name. Over the in-memory transaction: no runtime, no sockets.

use cohort_core::codec::decode;
use cohort_core::enrollment::{self, Source};
use cohort_core::identity::{self, Principal};
use cohort_core::mailbox::{self, MailboxAddr};
use cohort_core::session::{self, CreateRequest, NewSession, RouteRequest, SessionEvent};
use cohort_core::store::{MemTx, Table};
use cohort_core::{ErrorKind, Limits, Result};
use cohort_crypto::identity::{key_party_id, login_message, IdentityKey, LOGIN_DOMAIN};

const T0: i64 = 1_700_000_000_000;
const SIGNER: &str = "treasury-signer-1";

struct World {
    tx: MemTx,
    limits: Limits,
    coordinator_key: IdentityKey,
    counter: u8,
}

impl World {
    fn new() -> Self {
        World {
            tx: MemTx::new(),
            limits: Limits::default(),
            coordinator_key: IdentityKey::generate(),
            counter: 0,
        }
    }

    fn login(&mut self, party: &str, key: &IdentityKey) -> Result<Principal> {
        self.counter += 1;
        let random = [self.counter; 64];
        let ch = identity::issue_challenge(
            &mut self.tx,
            party,
            &key.public(),
            random,
            T0,
            &self.limits,
        )?;
        let sig = key.sign(LOGIN_DOMAIN, &login_message(&ch.challenge, party));
        let issued = identity::login(
            &mut self.tx,
            &ch.challenge_id,
            party,
            &key.public(),
            &sig,
            [self.counter; 32],
            &[self.coordinator_key.public()],
            T0,
            &self.limits,
        )?;
        identity::authenticate(&self.tx, &issued.access_token, T0)
    }

    fn coordinator(&mut self) -> Principal {
        let k = IdentityKey::from_bytes(&self.coordinator_key.to_bytes());
        self.login("coordinator", &k)
            .expect("coordinator key logs in")
    }

    fn enroll(&mut self, party: &str, key: &IdentityKey) {
        let c = self.coordinator();
        enrollment::enroll(&mut self.tx, &c, party, &key.public(), "", T0).expect("enroll");
    }

    /// A keygen session of `parties`, naming `party_keys` (others: their enrolled keys).
    fn session(&mut self, parties: &[&str], party_keys: Vec<(String, Vec<u8>)>) -> NewSession {
        let coord = self.coordinator();
        let req = CreateRequest {
            session_type: "keygen".into(),
            n: parties.len() as i32,
            t: 1,
            parties: parties.iter().map(|p| p.to_string()).collect(),
            party_keys,
            ..Default::default()
        };
        let mut n = 0u8;
        let mut entropy = |b: &mut [u8]| {
            n += 1;
            b.fill(n);
        };
        session::create(&mut self.tx, &coord, req, &mut entropy, T0, &self.limits)
            .expect("create session")
    }
}

fn token_of(made: &NewSession, party: &str) -> String {
    made.join_tokens
        .iter()
        .find(|(p, _)| p == party)
        .map(|(_, t)| t.clone())
        .expect("a token for every participant")
}

fn join(w: &mut World, who: &Principal, sid: &str, token: &str) -> Result<()> {
    session::join(&mut w.tx, who, sid, &who.id, token, None, T0, &w.limits).map(drop)
}

#[test]
fn an_unenrolled_key_cannot_claim_a_party_id_before_its_owner() {
    let mut w = World::new();
    let squatter = IdentityKey::generate();
    let owner = IdentityKey::generate();

    let e = w.login(SIGNER, &squatter).unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied);
    assert!(e.message.contains("not enrolled"), "{}", e.message);
    assert!(
        e.message.contains("cohort enroll"),
        "names the fix: {}",
        e.message
    );
    assert!(
        identity::get_party(&w.tx, SIGNER).unwrap().is_none(),
        "a refused login binds nothing"
    );

    w.enroll(SIGNER, &owner);
    let me = w.login(SIGNER, &owner).expect("the enrolled owner logs in");
    assert_eq!(me.identity_key, owner.public());
    let e = w.login(SIGNER, &squatter).unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied);
}

#[test]
fn an_unenrolled_key_logs_in_under_its_own_key_derived_id_only() {
    let mut w = World::new();
    let k = IdentityKey::generate();
    let own = key_party_id(&k.public());
    assert!(own.starts_with("key-") && own.len() == 4 + 16, "{own}");
    let p = w.login(&own, &k).expect("a key owns its derived id");
    assert_eq!(p.id, own);
    let e = enrollment::get(&w.tx, &own).unwrap().unwrap();
    assert_eq!((e.source, e.identity_key), (Source::KeyId, k.public()));

    // Another key cannot take that id, even under open enrollment.
    w.limits.open_enrollment = true;
    let other = IdentityKey::generate();
    assert_eq!(
        w.login(&own, &other).unwrap_err().kind,
        ErrorKind::PermissionDenied
    );
    // Nor can a coordinator enroll a key-prefixed id for a key it is not derived from.
    let c = w.coordinator();
    let e = enrollment::enroll(
        &mut w.tx,
        &c,
        "key-0000000000000000",
        &other.public(),
        "",
        T0,
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
}

#[test]
fn open_enrollment_binds_the_first_key_and_records_how() {
    let mut w = World::new();
    w.limits.open_enrollment = true;
    let first = IdentityKey::generate();
    w.login("dev-party", &first).expect("first login binds");
    let e = enrollment::get(&w.tx, "dev-party").unwrap().unwrap();
    assert_eq!(e.source, Source::FirstLogin);
    assert_eq!(
        w.login("dev-party", &IdentityKey::generate())
            .unwrap_err()
            .kind,
        ErrorKind::PermissionDenied
    );
    // Turning open enrollment off keeps what it bound.
    w.limits.open_enrollment = false;
    w.login("dev-party", &first).expect("still bound");
}

#[test]
fn enrolling_needs_the_coordinator_role_and_another_key_needs_unenroll_first() {
    let mut w = World::new();
    let k = IdentityKey::generate();
    let own = w.login(&key_party_id(&k.public()), &k).unwrap();
    let e = enrollment::enroll(&mut w.tx, &own, SIGNER, &k.public(), "", T0).unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied);
    assert_eq!(
        enrollment::list(&w.tx, &own, &[]).unwrap_err().kind,
        ErrorKind::PermissionDenied
    );

    let c = w.coordinator();
    let e = enrollment::enroll(&mut w.tx, &c, SIGNER, &[1; 31], "", T0).unwrap_err();
    assert!(e.message.contains("identity_key"), "{}", e.message);
    let e = enrollment::enroll(&mut w.tx, &c, SIGNER, &k.public(), "boss", T0).unwrap_err();
    assert!(e.message.contains("role"), "{}", e.message);

    let first = enrollment::enroll(&mut w.tx, &c, SIGNER, &k.public(), "", T0).unwrap();
    assert_eq!(
        (first.source, first.enrolled_by.as_str()),
        (Source::Enrolled, "coordinator")
    );
    // The same key again is fine (and sets the role); another key is refused.
    enrollment::enroll(&mut w.tx, &c, SIGNER, &k.public(), "persistent", T0).unwrap();
    let other = IdentityKey::generate();
    let e = enrollment::enroll(&mut w.tx, &c, SIGNER, &other.public(), "", T0).unwrap_err();
    assert_eq!(e.kind, ErrorKind::AlreadyExists);
    assert!(e.message.contains("unenroll"), "{}", e.message);

    assert!(enrollment::unenroll(&mut w.tx, &c, SIGNER).unwrap());
    assert!(!enrollment::unenroll(&mut w.tx, &c, SIGNER).unwrap());
    enrollment::enroll(&mut w.tx, &c, SIGNER, &other.public(), "", T0).unwrap();
    let listed = enrollment::list(&w.tx, &c, &[SIGNER.to_string(), "nobody".into()]).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].identity_key, other.public());
}

#[test]
fn unenrolling_revokes_the_tokens_and_the_published_key() {
    let mut w = World::new();
    let k = IdentityKey::generate();
    w.enroll(SIGNER, &k);
    let p = w.login(SIGNER, &k).unwrap();
    let enc = [9u8; 32];
    let sig = k.sign(
        cohort_crypto::identity::ENCRYPTION_KEY_DOMAIN,
        &cohort_crypto::identity::encryption_key_message(SIGNER, &enc),
    );
    identity::publish_encryption_key(&mut w.tx, &p, &enc, &sig, T0).unwrap();
    let tokens_of = |w: &World| {
        w.tx.tables.get(&Table::Tokens).map_or(0, |t| {
            t.values()
                .filter(|v| {
                    // Token records start with the principal's id (postcard: length, bytes).
                    v.windows(SIGNER.len()).any(|win| win == SIGNER.as_bytes())
                })
                .count()
        })
    };
    assert_eq!(tokens_of(&w), 1);

    let c = w.coordinator();
    enrollment::unenroll(&mut w.tx, &c, SIGNER).unwrap();
    assert_eq!(tokens_of(&w), 0, "the party's tokens are gone");
    let party = identity::get_party(&w.tx, SIGNER).unwrap().unwrap();
    assert!(party.identity_key.is_empty() && party.encryption_key.is_none());
    assert_eq!(
        w.login(SIGNER, &k).unwrap_err().kind,
        ErrorKind::PermissionDenied
    );
}

#[test]
fn an_enrolled_role_is_the_only_role_the_party_registers_with() {
    let mut w = World::new();
    let k = IdentityKey::generate();
    let c = w.coordinator();
    enrollment::enroll(&mut w.tx, &c, "phone-1", &k.public(), "delegate", T0).unwrap();
    let p = w.login("phone-1", &k).unwrap();
    let e = identity::register(&mut w.tx, &p, "phone-1", "persistent", "1", None, T0).unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied);
    identity::register(&mut w.tx, &p, "phone-1", "delegate", "1", None, T0).unwrap();
}

#[test]
fn a_session_names_the_enrolled_keys_when_its_creator_names_none() {
    let mut w = World::new();
    let (a, b) = (IdentityKey::generate(), IdentityKey::generate());
    w.enroll("a", &a);
    w.enroll("b", &b);
    // Enrolled parties that never logged in can be named.
    let made = w.session(&["a", "b"], Vec::new());
    let keys: Vec<[u8; 32]> = made
        .session
        .participants
        .iter()
        .map(|p| p.identity_key)
        .collect();
    assert_eq!(keys, vec![a.public(), b.public()]);

    let bad = |w: &mut World, party_keys: Vec<(String, Vec<u8>)>| {
        let coord = w.coordinator();
        let req = CreateRequest {
            session_type: "keygen".into(),
            n: 2,
            t: 1,
            parties: vec!["a".into(), "b".into()],
            party_keys,
            ..Default::default()
        };
        let mut entropy = |b: &mut [u8]| b.fill(7);
        session::create(&mut w.tx, &coord, req, &mut entropy, T0, &w.limits).unwrap_err()
    };
    let e = bad(&mut w, vec![("c".into(), vec![1; 32])]);
    assert!(e.message.contains("not a participant"), "{}", e.message);
    let e = bad(&mut w, vec![("a".into(), vec![1; 16])]);
    assert!(e.message.contains("32"), "{}", e.message);
}

#[test]
fn a_squatter_bound_first_cannot_join_act_or_read_in_a_session_naming_the_real_key() {
    let mut w = World::new();
    w.limits.open_enrollment = true;
    let owner = IdentityKey::generate();
    let squatter_key = IdentityKey::generate();
    let squatter = w
        .login(SIGNER, &squatter_key)
        .expect("open enrollment: first login binds");
    let peer_key = IdentityKey::generate();
    w.enroll("peer", &peer_key);
    let peer = w.login("peer", &peer_key).unwrap();

    let made = w.session(
        &[SIGNER, "peer"],
        vec![(SIGNER.to_string(), owner.public().to_vec())],
    );
    let sid = made.session.id.clone();
    assert_eq!(
        made.session.participant(SIGNER).unwrap().identity_key,
        owner.public()
    );

    // The squatter holds the id, so its events mailbox got the id's token; it cannot use it.
    let evs = mailbox::pending(&w.tx, &MailboxAddr::events(SIGNER), 0, 10).unwrap();
    let ev: SessionEvent = decode(&evs[0].message.payload).unwrap();
    let token = ev.join_tokens[0].1.clone();
    assert_eq!(token, token_of(&made, SIGNER));
    let e = join(&mut w, &squatter, &sid, &token).unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied);
    assert!(e.message.contains("another identity key"), "{}", e.message);

    // Nor send as the signer, nor read its mailbox, nor see the session.
    let route = RouteRequest {
        session_id: sid.clone(),
        from_party: SIGNER.into(),
        to_parties: vec!["peer".into()],
        round: 1,
        message_type: "r1".into(),
        payload: b"as the signer".to_vec().into(),
    };
    let id = mailbox::new_message_id(T0);
    let e = session::route(&mut w.tx, &squatter, &route, id, T0, &w.limits).unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied);
    let e = cohort_core::delivery::session_mailbox(&w.tx, &squatter, &sid, SIGNER).unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied);
    assert_eq!(
        session::status(&w.tx, &squatter, &sid).unwrap_err().kind,
        ErrorKind::PermissionDenied
    );

    // The honest peer joins as usual.
    join(&mut w, &peer, &sid, &token_of(&made, "peer")).expect("peer joins");
}

#[test]
fn join_tokens_are_stored_only_as_their_hash() {
    let mut w = World::new();
    let (a, b) = (IdentityKey::generate(), IdentityKey::generate());
    w.enroll("a", &a);
    w.enroll("b", &b);
    let made = w.session(&["a", "b"], Vec::new());
    let stored = w.tx.tables[&Table::Sessions]
        .values()
        .next()
        .expect("the session row")
        .clone();
    for (party, token) in &made.join_tokens {
        assert!(
            !stored.windows(token.len()).any(|x| x == token.as_bytes()),
            "{party}'s token is in the session row"
        );
        let hash = session::join_token_hash(token);
        assert!(stored.windows(32).any(|x| x == hash), "its hash is");
    }
    // The right token still admits its party (and only with the party's key).
    let pa = w.login("a", &a).unwrap();
    join(&mut w, &pa, &made.session.id, &token_of(&made, "a")).expect("a joins");
    let e = join(&mut w, &pa, &made.session.id, &token_of(&made, "b")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied);
}
