"""Independent Spark reader of one archived day, for the end-to-end tests.

Reads a local copy of the archive (Spark cannot reach S3 here: the
hadoop-aws jars are not installable from PyPI, so the Rust test downloads the
day's objects first) the way the README tells Spark users to: point
`spark.read.parquet` at the `activity/` folder, let partition discovery turn
`date=YYYY-MM-DD` into a column, filter on it. No Strata code. Prints one JSON
object on stdout whose `rows` have the shape read_archive.py prints, ordered
by (user_id, occurred_at, event_id), so the suite can compare the engines.

usage: read_archive_spark.py [--schema infer|archive] ROOT YYYY-MM-DD

ROOT is the folder holding `activity/` (the archive prefix), or `activity/`
itself. `--schema infer` (default) reads the files' own schema, as a user's
`spark.read.parquet(...)` does; `--schema archive` supplies the documented
table schema instead (`event_id` binary), which is how a metastore table
reads the files. Exits 1 with {"error": ...} when Spark cannot read the day.
"""

import argparse
import json
import os
import sys
import time
import uuid

COLUMNS = ["user_id", "occurred_at", "event_id", "kind", "source", "payload", "ingested_at"]
# The schema a metastore table (Athena/Glue/Hive DDL) declares.
ARCHIVE_SCHEMA = (
    "user_id string, occurred_at timestamp, event_id binary, kind string, "
    "source string, payload string, ingested_at timestamp, date date"
)
# Quiet JVM logging from the first line (setLogLevel only acts after start).
LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
logger.executor.name = org.apache.spark.executor.Executor
logger.executor.level = off
logger.tasks.name = org.apache.spark.scheduler.TaskSetManager
logger.tasks.level = off
"""


def spark_session(scratch: str):
    from pyspark.sql import SparkSession

    log4j = os.path.join(scratch, "log4j2.properties")
    with open(log4j, "w") as f:
        f.write(LOG4J2)
    session = (
        SparkSession.builder.master("local[1]")
        .appName("strata-read-archive")
        .config("spark.driver.memory", "512m")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        # C1-only JIT and the serial collector halve start-up plus a first
        # small query on 2 cores (measured ~20 s -> ~12 s); fine for test-sized days.
        .config(
            "spark.driver.extraJavaOptions",
            f"-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Dlog4j2.configurationFile=file:{log4j}",
        )
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.default.parallelism", "1")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.local.dir", scratch)
        .config("spark.sql.warehouse.dir", os.path.join(scratch, "warehouse"))
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--schema", choices=["infer", "archive"], default="infer")
    parser.add_argument("root")
    parser.add_argument("day")
    args = parser.parse_args()

    root = os.path.abspath(args.root)
    if os.path.isdir(os.path.join(root, "activity")):
        root = os.path.join(root, "activity")
    day_dir = os.path.join(root, f"date={args.day}")
    files = sorted(f for f in os.listdir(day_dir) if f.endswith(".parquet")) if os.path.isdir(day_dir) else []

    import tempfile

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="strata-spark-") as scratch:
        spark = spark_session(scratch)
        session_s = time.monotonic() - started
        try:
            reader = spark.read
            if args.schema == "archive":
                reader = reader.schema(ARCHIVE_SCHEMA)
            df = reader.parquet(root)
            types = {f.name: f.dataType.simpleString() for f in df.schema.fields}
            df.createOrReplaceTempView("activity")
            # The README's query shape: `date` unquoted, compared with a string.
            result = spark.sql(
                """
                SELECT user_id, unix_micros(CAST(occurred_at AS TIMESTAMP)) AS occurred_at,
                       event_id, kind, source, payload,
                       unix_micros(CAST(ingested_at AS TIMESTAMP)) AS ingested_at
                  FROM activity
                 WHERE date = :day
                 ORDER BY user_id, occurred_at, event_id
                """,
                args={"day": args.day},
            ).collect()
        except Exception as err:  # Py4J / analysis errors: report, do not trace
            print(json.dumps({"error": str(err).splitlines()[0], "files": len(files)}))
            return 1
        finally:
            version = spark.version
            spark.stop()
    rows = [[r[0], r[1], str(uuid_of(r[2])), r[3], r[4], r[5], r[6]] for r in result]
    print(
        json.dumps(
            {
                "rows": rows,
                "files": len(files),
                "engine": f"spark {version}",
                "types": types,
                "session_seconds": round(session_s, 1),
                "total_seconds": round(time.monotonic() - started, 1),
            }
        )
    )
    return 0


def uuid_of(value) -> uuid.UUID:
    if isinstance(value, (bytes, bytearray)):
        return uuid.UUID(bytes=bytes(value))
    return uuid.UUID(str(value))


if __name__ == "__main__":
    sys.exit(main())
