pub struct KafkaBench { pub weir: std::path::PathBuf, pub events: u64, pub rounds: u32, pub latency_secs: u64 }
pub async fn run(_c: KafkaBench) -> anyhow::Result<()> { Ok(()) }
