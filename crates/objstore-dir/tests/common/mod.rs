//! Helpers shared by the backend's integration tests.

/// A small deterministic generator (xorshift), so a failing run repeats.
#[allow(dead_code)]
pub struct Rng(pub u64);

#[allow(dead_code)]
impl Rng {
    /// Returns the next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Returns a value below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A child test process, killed and reaped when dropped (also when an assertion fails first).
#[allow(dead_code)]
pub struct Child(pub std::process::Child);

#[allow(dead_code)]
impl Child {
    /// Kills the child (if it still runs) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A command that runs this test binary's test `test` alone, with `env` set to
/// `dir|pool|arg` for [`child_spec`] to read.
#[allow(dead_code)]
pub fn child_command(
    test: &str,
    env: &str,
    dir: &std::path::Path,
    pool: rbdx_objstore::PoolId,
    arg: &str,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .stdout(std::process::Stdio::null())
        .env(env, format!("{}|{}|{arg}", dir.display(), pool.0));
    cmd
}

/// In a child started by [`child_command`]: the store directory, pool and argument its
/// parent passed; `None` when this process is not such a child.
#[allow(dead_code)]
pub fn child_spec(env: &str) -> Option<(std::path::PathBuf, rbdx_objstore::PoolId, String)> {
    let spec = std::env::var(env).ok()?;
    let mut parts = spec.splitn(3, '|');
    let dir = std::path::PathBuf::from(parts.next()?);
    let pool = rbdx_objstore::PoolId(parts.next()?.parse().ok()?);
    Some((dir, pool, parts.next()?.to_owned()))
}
