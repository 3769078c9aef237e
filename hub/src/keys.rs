//! Keys with rights (`--keys FILE`), tokens signed by them, and the revoked-token list.
//!
//! A client authenticates with a key id: either a key the hub holds, or a token's id
//! (`th1.CLAIMS`, see [`taskhub_core::token`]), whose secret the hub derives from the signing
//! key's. [`KeySet::resolve`] turns a key id into the secret to check the proof with and what
//! the session may do; [`Grant`] answers "may it?" for every request.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Deserialize;
use taskhub_core::auth::Secret;
use taskhub_core::protocol::AuthFailure;
use taskhub_core::rights::{QueueRight, Rights};
use taskhub_core::{ClientMsg, ErrorCode, Pattern, QueueName};
use taskhub_core::{keyfile, token};

/// One key the hub holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub secret: Secret,
    pub rights: Rights,
    /// Unix seconds after which it no longer authenticates.
    pub expires: Option<u64>,
}

impl Key {
    /// A key with every right and no expiry: what `--key` gives.
    pub fn full(secret: Secret) -> Key {
        Key {
            secret,
            rights: Rights::all(),
            expires: None,
        }
    }
}

/// What a session may do: its key's rights, and, for a token, the token's too (both must allow:
/// a token never outgrows the key that signed it, even after the key file changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub key: Rights,
    pub token: Option<Rights>,
}

impl Grant {
    fn all(&self, check: impl Fn(&Rights) -> bool) -> bool {
        check(&self.key) && self.token.as_ref().is_none_or(&check)
    }

    /// Whether it may read stats (and `/metrics`).
    pub fn may_read_stats(&self) -> bool {
        self.all(|r| r.stats)
    }

    fn who(&self) -> &'static str {
        if self.token.is_some() {
            "this token"
        } else {
            "this key"
        }
    }

    /// Where this session's results count alone for a redundant task: its key's `trusted`, and
    /// its token's too when it has one.
    pub fn trusted(&self) -> crate::broker::Trusted {
        let mut lists = vec![self.key.trusted.clone()];
        lists.extend(self.token.as_ref().map(|t| t.trusted.clone()));
        if lists.iter().any(Vec::is_empty) {
            lists.clear();
        }
        crate::broker::Trusted(lists)
    }

    /// Why this session may not cancel tasks of `queue` (which needs `put` on it), if it may not.
    pub fn cancel_refusal(&self, queue: &QueueName) -> Option<String> {
        (!self.all(|r| r.allows_queue(QueueRight::Put, queue))).then(|| {
            format!(
                "{} may not cancel tasks of queue {:?} (that needs put on it)",
                self.who(),
                queue.as_str()
            )
        })
    }

    /// `None` if the request is allowed; otherwise the `forbidden` message, naming the right
    /// it lacks. Acks, fails, releases and touches concern tasks the session already holds, and
    /// a session's own inbox is its own: those need no right. A `cancel` names a task, not its
    /// queue: the broker asks [`Grant::cancel_refusal`] once it has found the task.
    pub fn refusal<P>(&self, msg: &ClientMsg<P>) -> Option<String> {
        let who = self.who();
        let queue = |right: QueueRight, q: &QueueName| {
            let verb = match right {
                QueueRight::Put => "put to",
                QueueRight::Consume => "consume",
                QueueRight::Get => "get from",
            };
            (!q.is_inbox() && !self.all(|r| r.allows_queue(right, q))).then(|| {
                format!(
                    "{who} may not {verb} queue {:?} (it lacks {right} on it)",
                    q.as_str()
                )
            })
        };
        let lacks =
            |allowed: bool, what: String| (!allowed).then(|| format!("{who} may not {what}"));
        match msg {
            ClientMsg::Put {
                queue: q, reply_to, ..
            } => queue(QueueRight::Put, q).or_else(|| {
                let r = reply_to.as_ref().filter(|r| !r.is_inbox())?;
                lacks(
                    self.all(|rights| rights.allows_queue(QueueRight::Get, r)),
                    format!("name {:?} as reply_to (that needs get on it)", r.as_str()),
                )
            }),
            ClientMsg::Get { queue: q, .. } => queue(QueueRight::Get, q),
            ClientMsg::Consume { queues, .. } => {
                queues.iter().find_map(|q| queue(QueueRight::Consume, q))
            }
            ClientMsg::Publish { topic, .. } => lacks(
                self.all(|r| r.allows_publish(topic)),
                format!(
                    "publish to topic {:?} (it lacks publish on it)",
                    topic.as_str()
                ),
            ),
            ClientMsg::Subscribe { pattern, .. } => lacks(
                self.all(|r| r.allows_subscribe(pattern)),
                format!(
                    "subscribe to {:?} (it lacks subscribe on it)",
                    pattern.as_str()
                ),
            ),
            ClientMsg::Stats { .. } => {
                lacks(self.all(|r| r.stats), "read stats (it lacks stats)".into())
            }
            ClientMsg::DeadList { queue: q, .. } => queue(QueueRight::Get, &q.dead_letter()),
            ClientMsg::DeadRequeue { queue: q, .. } => {
                queue(QueueRight::Get, &q.dead_letter()).or_else(|| queue(QueueRight::Put, q))
            }
            ClientMsg::DeleteQueue { .. } => lacks(
                self.all(|r| r.admin),
                "delete queues (it lacks admin)".into(),
            ),
            ClientMsg::CreateToken { .. } | ClientMsg::RevokeToken { .. } => {
                if self.token.is_some() {
                    Some("a token may not create or revoke tokens; use an admin key".to_string())
                } else {
                    lacks(
                        self.key.admin,
                        "create or revoke tokens (it lacks admin)".into(),
                    )
                }
            }
            ClientMsg::Auth { .. }
            | ClientMsg::Ack { .. }
            | ClientMsg::Fail { .. }
            | ClientMsg::Release { .. }
            | ClientMsg::Touch { .. }
            | ClientMsg::Cancel { .. }
            | ClientMsg::Progress { .. }
            | ClientMsg::State { .. }
            | ClientMsg::Unsubscribe { .. }
            | ClientMsg::Ping { .. } => None,
        }
    }
}

/// Who a session authenticated as.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The secret the client's proof is checked with.
    pub secret: Secret,
    pub grant: Grant,
    /// Unix seconds at which the session's credentials expire, if they do.
    pub expires: Option<u64>,
    /// The token's id, for a token.
    pub token_id: Option<String>,
}

/// Why a key id does not authenticate, before or after the proof is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: AuthFailure,
    pub message: String,
}

impl Refusal {
    fn credentials() -> Refusal {
        Refusal {
            reason: AuthFailure::Credentials,
            message: "unknown key id or wrong key".into(),
        }
    }
}

/// The keys a hub holds, by key id.
pub type KeySet = BTreeMap<String, Key>;

/// The secret and rights for `key_id`, if it names a key or a well-formed token signed by an
/// admin key. Expiry and revocation are checked by [`check_validity`], once the proof is known
/// to be right (so a stranger learns nothing about which tokens exist).
pub fn resolve(keys: &KeySet, key_id: &str) -> Result<Identity, Refusal> {
    if !token::is_token_id(key_id) {
        let key = keys.get(key_id).ok_or_else(Refusal::credentials)?;
        return Ok(Identity {
            secret: key.secret.clone(),
            grant: Grant {
                key: key.rights.clone(),
                token: None,
            },
            expires: key.expires,
            token_id: None,
        });
    }
    let claims = token::claims(key_id).map_err(|_| Refusal::credentials())?;
    let issuer = keys.get(&claims.iss).ok_or_else(Refusal::credentials)?;
    if !issuer.rights.admin {
        return Err(Refusal::credentials());
    }
    let expires = match issuer.expires {
        Some(e) => e.min(claims.exp),
        None => claims.exp,
    };
    Ok(Identity {
        secret: token::secret(key_id, &issuer.secret),
        grant: Grant {
            key: issuer.rights.clone(),
            token: Some(claims.rights),
        },
        expires: Some(expires),
        token_id: Some(claims.id),
    })
}

/// A new token signed by the key `iss` (with `secret`, expiring at `key_expires`), carrying
/// `rights`, that works for `ttl_secs` from now but never past its key. The token and its claims;
/// an error only when the system has no randomness for its id.
pub fn mint(
    iss: &str,
    secret: &Secret,
    key_expires: Option<u64>,
    rights: Rights,
    ttl_secs: u64,
) -> Result<(String, token::Claims), String> {
    let mut raw = [0u8; token::ID_BYTES];
    getrandom::fill(&mut raw).map_err(|e| format!("no randomness for a token id: {e}"))?;
    let now = crate::storage::unix_ms() / 1000;
    let mut exp = now.saturating_add(ttl_secs.max(1));
    if let Some(key_exp) = key_expires {
        exp = exp.min(key_exp);
    }
    let claims = token::Claims {
        id: taskhub_core::auth::hex(&raw),
        iss: iss.to_string(),
        exp,
        rights,
    };
    Ok((token::issue(&claims, secret), claims))
}

/// A token presented whole, as HTTP's `Authorization: Bearer th1.…` (`/metrics`): who it is, if
/// an admin key signed it and it has not expired or been revoked at `now` (Unix seconds).
pub fn bearer(
    keys: &KeySet,
    revoked: &Revoked,
    token: &str,
    now: u64,
) -> Result<Identity, Refusal> {
    let (key_id, signature, claims) =
        token::credentials(token).map_err(|_| Refusal::credentials())?;
    let issuer = keys.get(&claims.iss).ok_or_else(Refusal::credentials)?;
    if !token::signed_by(&key_id, &signature, &issuer.secret) {
        return Err(Refusal::credentials());
    }
    let identity = resolve(keys, &key_id)?;
    check_validity(&identity, revoked, now)?;
    Ok(identity)
}

/// After a right proof: whether the credentials still hold at `now` (Unix seconds).
pub fn check_validity(identity: &Identity, revoked: &Revoked, now: u64) -> Result<(), Refusal> {
    if let Some(exp) = identity.expires.filter(|&e| e <= now) {
        let what = if identity.token_id.is_some() {
            "token"
        } else {
            "key"
        };
        return Err(Refusal {
            reason: AuthFailure::Expired,
            message: format!("the {what} expired at {}", rfc3339(exp)),
        });
    }
    if let Some(id) = identity
        .token_id
        .as_deref()
        .filter(|id| revoked.contains(id))
    {
        return Err(Refusal {
            reason: AuthFailure::Revoked,
            message: format!("the token {id} was revoked"),
        });
    }
    Ok(())
}

/// Why a key file cannot be used. The message names the file, and the key where it can.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeysError(String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: BTreeMap<String, FileKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKey {
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    put: Vec<Pattern>,
    #[serde(default)]
    consume: Vec<Pattern>,
    #[serde(default)]
    get: Vec<Pattern>,
    #[serde(default)]
    publish: Vec<Pattern>,
    #[serde(default)]
    subscribe: Vec<Pattern>,
    #[serde(default)]
    trusted: Vec<Pattern>,
    #[serde(default)]
    stats: bool,
    #[serde(default)]
    admin: bool,
    expires: Option<toml::value::Datetime>,
}

/// Read a key file (TOML): a `[keys.ID]` table per key with `secret` or `secret_file` (relative
/// to the key file), its rights (`all = true`, or `put`, `consume`, `get`, `publish`,
/// `subscribe` as lists of patterns, `stats`, `admin`), the queues its results are `trusted` on
/// (patterns, with `all` too) and an optional `expires` (a TOML date or date-time with offset).
pub fn load_file(path: &Path) -> Result<KeySet, KeysError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| KeysError(format!("cannot read the key file {}: {e}", path.display())))?;
    let file: KeysFile = toml::from_str(&text)
        .map_err(|e| KeysError(format!("the key file {}: {e}", path.display())))?;
    if file.keys.is_empty() {
        return Err(KeysError(format!(
            "the key file {} names no key (add a [keys.NAME] table)",
            path.display()
        )));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut keys = KeySet::new();
    for (id, k) in file.keys {
        let named = |why: String| {
            KeysError(format!(
                "the key file {}, key {id:?}: {why}",
                path.display()
            ))
        };
        if token::is_token_id(&id) {
            return Err(named(format!(
                "ids starting {:?} are reserved for tokens",
                token::PREFIX
            )));
        }
        let secret = match (k.secret, k.secret_file) {
            (Some(s), None) => s,
            (None, Some(file)) => {
                let file = dir.join(file);
                if let Some(mode) = keyfile::loose_mode(&file) {
                    tracing::warn!("{}", keyfile::loose_mode_warning(&file, mode));
                }
                keyfile::read_key_file(&file).map_err(named)?
            }
            _ => {
                return Err(named(
                    "give exactly one of `secret` and `secret_file`".into(),
                ));
            }
        };
        if secret.is_empty() {
            return Err(named("the secret is empty".into()));
        }
        let rights = if k.all {
            Rights {
                trusted: k.trusted,
                ..Rights::all()
            }
        } else {
            Rights {
                put: k.put,
                consume: k.consume,
                get: k.get,
                publish: k.publish,
                subscribe: k.subscribe,
                trusted: k.trusted,
                stats: k.stats,
                admin: k.admin,
            }
        };
        let expires = k
            .expires
            .map(|d| unix_seconds(&d).map_err(named))
            .transpose()?;
        keys.insert(
            id,
            Key {
                secret: Secret::new(secret),
                rights,
                expires,
            },
        );
    }
    Ok(keys)
}

/// A TOML date (midnight UTC) or offset date-time, in Unix seconds.
fn unix_seconds(d: &toml::value::Datetime) -> Result<u64, String> {
    unix_ms(d)
        .map(|ms| ms / 1_000)
        .map_err(|why| format!("`expires` {why}"))
}

/// A TOML date (midnight UTC) or offset date-time (RFC 3339), in Unix milliseconds.
fn unix_ms(d: &toml::value::Datetime) -> Result<u64, String> {
    let date = d.date.ok_or("needs a date")?;
    let (h, m, s, ns) = d
        .time
        .map_or((0, 0, 0, 0), |t| (t.hour, t.minute, t.second, t.nanosecond));
    let offset_minutes: i64 = match (d.time, d.offset) {
        (None, _) => 0,
        (Some(_), Some(toml::value::Offset::Z)) => 0,
        (Some(_), Some(toml::value::Offset::Custom { minutes })) => i64::from(minutes),
        (Some(_), None) => {
            return Err("has a time but no offset: add Z (UTC) or +HH:MM".into());
        }
    };
    let days = days_from_civil(
        i64::from(date.year),
        u32::from(date.month),
        u32::from(date.day),
    );
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(s)
        - offset_minutes * 60;
    u64::try_from(secs * 1_000 + i64::from(ns / 1_000_000))
        .map_err(|_| "is before 1970".to_string())
}

/// An RFC 3339 time as people write it (`2026-12-01T18:30:00Z`, `2026-12-01 19:30:00.250+01:00`,
/// or a date alone, midnight UTC) in Unix milliseconds: what `taskhub put --at` takes.
pub fn parse_time(text: &str) -> Result<u64, String> {
    let d: toml::value::Datetime = text.trim().parse().map_err(|_| {
        format!(
            "{text:?} is not an RFC 3339 time: write it like 2026-12-01T18:30:00Z or 2026-12-01T19:30:00+01:00"
        )
    })?;
    unix_ms(&d).map_err(|why| format!("{text:?} {why}"))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds as `2026-11-30T12:00:00Z`.
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let rem = unix % 86_400;
    // The inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Most revoked token ids kept (each until its token would have expired anyway).
pub const MAX_REVOKED: usize = 100_000;

/// Revoked token ids with their expiry (after which the token fails anyway and the entry is
/// dropped), kept in `DATA_DIR/revoked.json` when the hub has a data dir.
#[derive(Debug, Default)]
pub struct Revoked {
    ids: Mutex<HashMap<String, u64>>,
    file: Option<PathBuf>,
}

#[derive(serde::Serialize, Deserialize)]
struct RevokedFile {
    revoked: Vec<RevokedEntry>,
}

#[derive(serde::Serialize, Deserialize)]
struct RevokedEntry {
    id: String,
    exp: u64,
}

impl Revoked {
    /// The list kept in `dir` (read back if it exists), or one in memory only.
    pub fn open(dir: Option<&Path>) -> Result<Revoked, KeysError> {
        let Some(dir) = dir else {
            return Ok(Revoked::default());
        };
        let file = dir.join("revoked.json");
        let mut ids = HashMap::new();
        match std::fs::read(&file) {
            Ok(bytes) => {
                let read: RevokedFile = serde_json::from_slice(&bytes).map_err(|e| {
                    KeysError(format!(
                        "the revoked-token list {} is damaged: {e}",
                        file.display()
                    ))
                })?;
                ids.extend(read.revoked.into_iter().map(|e| (e.id, e.exp)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(KeysError(format!("cannot read {}: {e}", file.display())));
            }
        }
        Ok(Revoked {
            ids: Mutex::new(ids),
            file: Some(file),
        })
    }

    fn ids(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids().contains_key(id)
    }

    /// Revoke `id` (a token valid until `exp`), and store the list before returning. The error
    /// is the code and message to answer with.
    pub fn revoke(&self, id: &str, exp: u64, now: u64) -> Result<(), (ErrorCode, String)> {
        let mut ids = self.ids();
        ids.retain(|_, &mut e| e > now);
        if ids.len() >= MAX_REVOKED && !ids.contains_key(id) {
            return Err((
                ErrorCode::LimitReached,
                format!(
                    "{MAX_REVOKED} tokens are revoked and not yet expired; replace the signing key instead"
                ),
            ));
        }
        ids.insert(id.to_string(), exp);
        let Some(file) = &self.file else {
            return Ok(());
        };
        let list = RevokedFile {
            revoked: ids
                .iter()
                .map(|(id, &exp)| RevokedEntry {
                    id: id.clone(),
                    exp,
                })
                .collect(),
        };
        let result = write_atomically(file, &serde_json::to_vec(&list).unwrap_or_default());
        if let Err(e) = result {
            ids.remove(id);
            return Err((
                ErrorCode::StorageUnavailable,
                format!(
                    "cannot store {}: {e}; the token is not revoked",
                    file.display()
                ),
            ));
        }
        Ok(())
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("taskhub-keys-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_key_file_names_keys_with_rights_and_expiry() {
        let path = write(
            "ok",
            r#"
            [keys.admin]
            secret = "s3cret"
            all = true

            [keys.producer]
            secret = "p"
            put = ["tasks"]
            get = ["results.>"]
            stats = true
            expires = 2027-01-02T03:04:05Z

            [keys.day]
            secret = "d"
            consume = ["tasks"]
            expires = 2027-01-02
            "#,
        );
        let keys = load_file(&path).unwrap();
        assert_eq!(keys["admin"].rights, Rights::all());
        let p = &keys["producer"];
        assert_eq!(p.secret, Secret::new("p"));
        assert!(p.rights.stats && !p.rights.admin && p.rights.consume.is_empty());
        assert_eq!(p.expires, Some(1_798_859_045));
        assert_eq!(rfc3339(1_798_859_045), "2027-01-02T03:04:05Z");
        assert_eq!(keys["day"].expires, Some(1_798_848_000));
    }

    #[test]
    fn mistakes_in_a_key_file_are_named() {
        for (text, says) in [
            ("[keys.a]\nsecret = \"x\"\nconsumee = [\"t\"]\n", "consumee"),
            (
                "[keys.a]\nput = [\"t\"]\n",
                "exactly one of `secret` and `secret_file`",
            ),
            (
                "[keys.a]\nsecret = \"x\"\nput = [\"bad name!\"]\n",
                "bad name!",
            ),
            (
                "[keys.a]\nsecret = \"x\"\nexpires = 2027-01-01T00:00:00\n",
                "no offset",
            ),
            ("", "names no key"),
        ] {
            let err = load_file(&write("bad", text)).unwrap_err().to_string();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }

    #[test]
    fn dates_convert_both_ways() {
        for unix in [0, 951_782_400, 1_700_000_000, 4_102_444_800] {
            let text = rfc3339(unix);
            let d: toml::value::Datetime = text.parse().unwrap();
            assert_eq!(unix_seconds(&d).unwrap(), unix, "{text}");
            assert_eq!(parse_time(&text), Ok(unix * 1_000), "{text}");
        }
    }

    #[test]
    fn times_as_people_write_them_read_as_unix_milliseconds() {
        assert_eq!(parse_time("2026-12-01T18:30:00Z"), Ok(1_796_149_800_000));
        assert_eq!(
            parse_time("2026-12-01T19:30:00.25+01:00"),
            Ok(1_796_149_800_250)
        );
        assert_eq!(
            parse_time("2024-02-29 23:59:59.999-00:30"),
            Ok(1_709_252_999_999)
        );
        assert_eq!(parse_time("2026-12-01"), Ok(1_796_083_200_000));
        for (bad, says) in [
            ("tomorrow", "RFC 3339"),
            ("2026-13-01T00:00:00Z", "RFC 3339"),
            ("2026-12-01T18:30:00", "no offset"),
            ("1969-12-31T23:59:59Z", "before 1970"),
        ] {
            let err = parse_time(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
