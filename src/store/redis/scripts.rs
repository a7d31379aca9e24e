//! The Lua scripts, each in its own file beside `admit.lua` (src/store/).

/// Check and count (or only read) one request: `admit_lib.lua` (constants
/// and helpers) then `admit.lua` (one admission), one chunk. See the
/// headers of those files.
pub(super) const ADMIT_LUA: &str = concat!(
    include_str!("../admit_lib.lua"),
    include_str!("../admit.lua")
);

/// `admit_lib.lua` alone: a batch call runs it once, before its admissions.
pub(super) const ADMIT_LIB_LUA: &str = include_str!("../admit_lib.lua");

/// One admission, after `admit_lib.lua`.
pub(super) const ADMIT_ONE_LUA: &str = include_str!("../admit.lua");

/// The driver that runs `admit.lua` once per admission of a batch call
/// (`batch.rs` prepends `admit_lib.lua` and `admit.lua` as a function). See
/// the header of that file.
pub(super) const ADMIT_BATCH_LUA: &str = include_str!("../admit_batch.lua");

/// Was an admission call whose reply was lost applied? See the header of that file.
pub(super) const SETTLE_LUA: &str = include_str!("../settle.lua");

/// Creates the client hash unless it exists. KEYS: client. ARGV: field/value pairs.
pub(super) const CREATE_CLIENT_LUA: &str = include_str!("../create_client.lua");

/// Patches the client hash if it exists; returns it (nil when absent).
/// KEYS: client. ARGV: field/value pairs, possibly none.
pub(super) const UPDATE_CLIENT_LUA: &str = include_str!("../update_client.lua");

/// Stores a key. KEYS: client, key, keys, names. ARGV: key id, name,
/// created_at, then the key hash's field/value pairs.
/// Returns 1, or -1 no such client, -2 name taken, -3 key id in use.
pub(super) const CREATE_KEY_LUA: &str = include_str!("../create_key.lua");

/// Deletes a key of a client. KEYS: key, keys, names. ARGV: key id, client id.
/// Returns 1 when deleted, 0 when there was no such key.
pub(super) const REVOKE_KEY_LUA: &str = include_str!("../revoke_key.lua");

/// Rotates a key's secret. KEYS: key. ARGV: client id, new hash, grace in
/// milliseconds, now in Unix milliseconds ("" to read `TIME`). Moves the
/// current hash and generation to the `prev_*` fields, valid until now +
/// grace, and stores the new hash with generation + 1. Returns the key hash
/// (HGETALL), or nil when the key does not exist in that client.
pub(super) const ROTATE_KEY_LUA: &str = include_str!("../rotate_key.lua");

/// Takes (leases) pending quota notifications of one client. KEYS: the
/// client's notify hash. ARGV: now ("" for `TIME`), lease ms, one field or ""
/// for every expired lease. Returns field, value pairs. See that file.
pub(super) const NOTIFY_CLAIM_LUA: &str = include_str!("../notify_claim.lua");

/// `EVALSHA` of `script` as one command built in place: `fill` writes the
/// keys and then the arguments straight into the command's buffer.
/// (`redis::ScriptInvocation` first copies each key and argument into a
/// `Vec` of its own, then copies them all again into the command: two
/// allocations per argument, and an admission has some thirty.)
pub(super) fn evalsha(
    script: &redis::Script,
    (keys, args): (usize, usize),
    fill: impl FnOnce(&mut redis::Cmd),
) -> redis::Cmd {
    let mut cmd = redis::Cmd::with_capacity(3 + keys + args, 64 * (keys + args));
    cmd.arg("EVALSHA").arg(script.get_hash()).arg(keys);
    fill(&mut cmd);
    cmd
}

/// Runs a command made by [`evalsha`]; a server that does not have the
/// script (`NOSCRIPT`: restarted, flushed, a new replica promoted) is given
/// it with `SCRIPT LOAD` and the command goes once more, as
/// `ScriptInvocation::invoke_async` does.
pub(super) async fn invoke<T: redis::FromRedisValue>(
    script: &redis::Script,
    cmd: &redis::Cmd,
    con: &mut impl redis::aio::ConnectionLike,
) -> redis::RedisResult<T> {
    match cmd.query_async(con).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.load_async(con).await?;
            cmd.query_async(con).await
        }
        other => other,
    }
}
