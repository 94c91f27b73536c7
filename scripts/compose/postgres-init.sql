-- Runs once when the metadata Postgres volume is created: a database for the MLflow tracking server.
CREATE DATABASE mlflow;
