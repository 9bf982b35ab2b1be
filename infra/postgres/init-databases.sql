-- Runs once, when the postgres volume is empty. POSTGRES_DB creates the Prefect database; MLflow gets its own.
CREATE DATABASE mlflow OWNER helios;
