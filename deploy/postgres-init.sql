-- The MLflow server's store and the domain config store are separate databases.
CREATE DATABASE mlflow;
CREATE DATABASE domain_mlflow;
