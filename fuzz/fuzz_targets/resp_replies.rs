//! RESP replies as Redis (or a hostile server posing as one) sends them,
//! through the connection's reader: values or errors, never a panic, and no
//! buffer sized by a length before its bytes arrive.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    rt().block_on(async {
        let (mut a, b) = tokio::io::duplex(data.len().max(1) + 1);
        a.write_all(data).await.unwrap();
        drop(a);
        let mut c = redvault::resp::Conn::new(Box::new(b), "fuzz".into(), Duration::from_secs(1));
        for _ in 0..=data.len() {
            if c.read_reply("fuzz").await.is_err() {
                break;
            }
        }
    });
});
