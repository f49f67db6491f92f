# syntax=docker/dockerfile:1
# The chat gateway, as Cloud Run runs it: compiled TypeScript, production
# dependencies only, a non-root user, NODE_ENV=production (so every required
# setting must be present and REDIS_URL is mandatory).

FROM node:20.20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# The browser SDK is an npm workspace: npm ci needs its package.json.
COPY service/client/package.json ./service/client/
RUN npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY service ./service
RUN npm run build

FROM node:20.20-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
COPY service/client/package.json ./service/client/
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY --from=build /app/dist ./dist
USER node
# 8080: the public listener (PORT). 9464: Prometheus metrics (METRICS_PORT), never routed publicly.
EXPOSE 8080 9464
# Node as PID 1 receives Cloud Run's SIGTERM directly and drains (service/src/main.ts).
CMD ["node", "dist/service/src/main.js"]
