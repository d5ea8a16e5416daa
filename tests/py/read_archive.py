"""Independent reader of one archived day, for the end-to-end tests.

Reads the day's Parquet files from the S3 server with pyarrow's own S3
filesystem (no Strata code), checks per-file properties from the Parquet
footer, and queries the Hive-partitioned dataset through DuckDB. Prints one
JSON object on stdout.

usage: read_archive.py ENDPOINT BUCKET PREFIX YYYY-MM-DD
"""

import json
import os
import sys
import uuid

import duckdb
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq


def main() -> None:
    endpoint, bucket, prefix, day = sys.argv[1:5]
    scheme, host = endpoint.split("://", 1)
    fs = pafs.S3FileSystem(
        endpoint_override=host,
        scheme=scheme,
        region="us-east-1",
        access_key=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        allow_bucket_creation=False,
    )
    root = f"{bucket}/{prefix.strip('/')}/activity"
    day_dir = f"{root}/date={day}"
    infos = fs.get_file_info(pafs.FileSelector(day_dir, allow_not_found=True))
    files = sorted(i.path for i in infos if i.path.endswith(".parquet"))

    with fs.open_input_stream(f"{day_dir}/_manifest.json") as stream:
        manifest = json.loads(stream.read())

    files_sorted = True
    statistics = True
    page_index = True
    codecs = set()
    users_per_file = []
    for path in files:
        parquet = pq.ParquetFile(path, filesystem=fs)
        meta = parquet.metadata
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                column = group.column(c)
                codecs.add(column.compression)
                if column.statistics is None or not column.statistics.has_min_max:
                    statistics = False
                if not (column.has_column_index and column.has_offset_index):
                    page_index = False
        table = parquet.read(columns=["user_id", "occurred_at", "event_id"])
        keys = list(
            zip(
                table.column("user_id").to_pylist(),
                table.column("occurred_at").cast("int64").to_pylist(),
                [bytes(uuid_bytes(v)) for v in table.column("event_id").to_pylist()],
            )
        )
        if keys != sorted(keys):
            files_sorted = False
        users_per_file.append(set(k[0] for k in keys))
    users_disjoint = all(
        not (users_per_file[i] & users_per_file[j])
        for i in range(len(users_per_file))
        for j in range(i + 1, len(users_per_file))
    )

    dataset = ds.dataset(root, filesystem=fs, format="parquet", partitioning="hive")
    con = duckdb.connect()
    con.register("activity", dataset)
    result = con.execute(
        """
        SELECT user_id, epoch_us(occurred_at), event_id, kind, source, payload,
               epoch_us(ingested_at)
          FROM activity
         WHERE CAST(date AS VARCHAR) = ?
         ORDER BY user_id, occurred_at, event_id
        """,
        [day],
    ).fetchall()
    rows = [
        [r[0], r[1], str(uuid_of(r[2])), r[3], r[4], r[5], r[6]] for r in result
    ]
    print(
        json.dumps(
            {
                "rows": rows,
                "files": len(files),
                "files_sorted": files_sorted,
                "users_disjoint": users_disjoint,
                "statistics": statistics,
                "page_index": page_index,
                "codecs": sorted(codecs),
                "manifest_files": len(manifest.get("files", [])),
            }
        )
    )


def uuid_bytes(value) -> bytes:
    if isinstance(value, str):  # event_id written as canonical UUID text
        return uuid.UUID(value).bytes
    return value.bytes if isinstance(value, uuid.UUID) else bytes(value)


def uuid_of(value) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, (bytes, bytearray)):
        return uuid.UUID(bytes=bytes(value))
    return uuid.UUID(str(value))


if __name__ == "__main__":
    main()
