KIND=zdb
source "$(dirname "$0")/errors.sh"
