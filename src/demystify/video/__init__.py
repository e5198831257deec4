"""Video decoding with ffmpeg: probing, frame extraction, the frames manifest."""
