use std::collections::BTreeMap;

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::*;

fn id(partition: i32, clicks: i64, orders: i64, decisions: i64) -> CheckpointId {
    CheckpointId { partition, positions: Positions { clicks, orders }, decisions }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime")
}

#[test]
fn checkpoint_names_sort_like_their_offsets_and_read_back() {
    let a = id(3, 9, 120, 2);
    assert_eq!(CheckpointId::parse(3, &a.file_name()), Some(a));
    assert!(id(0, 9, 10, 0).file_name() < id(0, 10, 10, 0).file_name());
    assert_eq!(CheckpointId::parse(3, "something-else.ckpt"), None);
    assert_eq!(CheckpointId::parse(3, "1-2-3-4.ckpt"), None);
}

#[test]
fn the_latest_checkpoint_within_the_committed_offsets_is_chosen_and_old_ones_pruned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = dir.path().join("ckpt").display().to_string();
    let store = CheckpointStore::open(&url, &BTreeMap::new(), "group-a").expect("open");
    runtime().block_on(async {
        for (c, o, d) in [(10, 5, 0), (20, 8, 1), (30, 12, 1), (40, 12, 3)] {
            store.put(&id(2, c, o, d), Bytes::from(format!("{c}")), None).await.expect("put");
        }
        store.put(&id(1, 99, 99, 0), Bytes::from_static(b"other"), None).await.expect("put");
        let committed = Positions { clicks: 35, orders: 12 };
        let chosen = store.within(2, committed, 2).await.expect("list").first().copied();
        assert_eq!(chosen, Some(id(2, 30, 12, 1)), "(40, 12, 3) is past the committed offsets");
        assert_eq!(store.get(&id(2, 30, 12, 1)).await.expect("get"), Bytes::from_static(b"30"));
        assert_eq!(
            store.within(2, committed, 0).await.expect("list").first().copied(),
            Some(id(2, 10, 5, 0)),
            "a checkpoint that repeated more decisions than are committed is not used"
        );
        assert_eq!(store.within(2, Positions { clicks: 5, orders: 5 }, 9).await.expect("list"), []);
        assert_eq!(store.prune(2, 2).await.expect("prune"), 2);
        assert_eq!(store.list(2).await.expect("list"), [id(2, 30, 12, 1), id(2, 40, 12, 3)]);
        assert_eq!(store.list(1).await.expect("list").len(), 1, "other partitions are not pruned");
    });
    let other = CheckpointStore::open(&url, &BTreeMap::new(), "group-b").expect("open");
    assert!(runtime().block_on(other.list(2)).expect("list").is_empty(), "groups do not share checkpoints");
}

#[test]
fn a_feature_table_writes_as_parquet_with_its_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = dir.path().display().to_string();
    let store = CheckpointStore::open(&url, &BTreeMap::new(), "g").expect("open");
    let schema = Arc::new(Schema::new(vec![Field::new("orders", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).expect("batch");
    let parquet = features_parquet(4, &batch, &[("segstream.clicks_offset", "17".into())]).expect("parquet");
    runtime().block_on(store.put(&id(4, 17, 3, 0), Bytes::from_static(b"s"), Some(parquet))).expect("put");
    let file = dir.path().join("g/features/partition-00004.parquet");
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file).expect("file"))
        .expect("parquet reader");
    let kv = reader.metadata().file_metadata().key_value_metadata().cloned().unwrap_or_default();
    assert!(kv.iter().any(|k| k.key == "segstream.clicks_offset" && k.value.as_deref() == Some("17")));
    let rows: usize = reader.build().expect("reader").map(|b| b.expect("batch").num_rows()).sum();
    assert_eq!(rows, 3);
    // The trainer reads every partition's table back.
    let other = features_parquet(1, &batch.slice(0, 1), &[]).expect("parquet");
    runtime().block_on(store.put(&id(1, 1, 1, 0), Bytes::from_static(b"s"), Some(other))).expect("put");
    std::fs::write(dir.path().join("g/features/notes.txt"), "not a table").expect("write");
    let tables = runtime().block_on(store.feature_tables()).expect("tables");
    let rows: Vec<(i32, usize)> =
        tables.iter().map(|(p, b)| (*p, b.iter().map(RecordBatch::num_rows).sum())).collect();
    assert_eq!(rows, [(1, 1), (4, 3)]);
    std::fs::write(dir.path().join("g/features/partition-00002.parquet"), "broken").expect("write");
    let e = runtime().block_on(store.feature_tables()).expect_err("broken").to_string();
    assert!(e.contains("partition 2"), "{e}");
}

#[test]
fn a_location_that_cannot_be_used_is_refused_with_the_key_and_the_fix() {
    let e = CheckpointStore::open("nosuch://x/y", &BTreeMap::new(), "g").expect_err("refused").to_string();
    assert!(e.contains("checkpoint.url") && e.contains("scheme"), "{e}");
    let e = CheckpointStore::open("", &BTreeMap::new(), "g").expect_err("refused").to_string();
    assert!(e.contains("checkpoint.url") && e.contains("set a directory"), "{e}");
}
