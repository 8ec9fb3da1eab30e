"""The distillation pipeline: Ray and the stages at the edge; nothing below imports it."""
