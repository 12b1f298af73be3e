"""Watches served traffic: training/serving skew, class-prior shift and drift between windows of
logged requests, with TFDV and the comparators schema/schema.pbtxt declares (`fmnist monitor`).

Sits between cli and reports: it never reads request logs itself (serving is the CLI's), it is
handed PredictionLogs."""
