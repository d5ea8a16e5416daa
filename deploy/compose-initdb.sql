-- Run once by the postgres image on an empty data directory (compose.yml):
-- the producer database of source `payments`. The hot store is POSTGRES_DB.
CREATE DATABASE payments OWNER strata;
