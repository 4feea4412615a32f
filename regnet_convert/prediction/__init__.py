"""Classifying images with a converted or exported model (`regnet-convert predict`)."""

from regnet_convert.prediction.classify import ClassScore, Prediction, Predictor, predict

__all__ = ["ClassScore", "Prediction", "Predictor", "predict"]
